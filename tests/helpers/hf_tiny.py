"""Tiny transformers checkpoints for tests: random weights from small configs (tens of thousands
of parameters), saved with ``save_pretrained`` into a folder together with a word-level
tokenizer trained here on the project's own sentences. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 96
MAX_TOKENS = 32
SPECIAL_TOKENS = ("[UNK]", "[PAD]", "<eos>")


def save_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over the most frequent words of ``compress/data/sentences.txt``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from compress.data.builtin import sentence_texts

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(sentence_texts(), trainers.WordLevelTrainer(
        vocab_size=VOCAB, special_tokens=list(SPECIAL_TOKENS)))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="<eos>").save_pretrained(folder)


def save_model(kind: str, folder: Path, tokenizer: bool = True) -> Path:
    """Save a tiny ``gpt2`` (Conv1D layers, tied head), ``llama`` (untied head, grouped-query
    attention) or ``bert-classifier`` (3 classes) into ``folder``; returns ``folder``."""
    import transformers as tf

    torch.manual_seed(0)
    if kind == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=VOCAB, n_positions=MAX_TOKENS, n_embd=32, n_layer=2,
                                                 n_head=2, eos_token_id=2, bos_token_id=2))
    elif kind == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=MAX_TOKENS, tie_word_embeddings=False, pad_token_id=1,
            eos_token_id=2, bos_token_id=2))
    elif kind == "bert-classifier":
        model = tf.BertForSequenceClassification(tf.BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=MAX_TOKENS, num_labels=3, pad_token_id=1))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    if tokenizer:
        save_tokenizer(folder)
    return folder
