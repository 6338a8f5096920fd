"""Fine-tuning that recovers accuracy after compression: QAT and knowledge distillation with a
learning rate derived from the loss sharpness, exact resume from checkpoints, and torchrun."""
