"""Source text of user files (model and data factories) that the tests write to disk."""

TINY_MODEL_SOURCE = """
import torch
from torch import nn

def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

def not_a_module():
    return 42

def digits_data():
    torch.manual_seed(0)
    return torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))

def unlabeled_data():
    torch.manual_seed(0)
    return torch.rand(12, 1, 8, 8), None
"""
