"""Source text of a tiny trained conv model and its data, written to a file by CLI tests."""

FACTORIES = """
from compress.testing.tiny import tiny_convnet, tiny_data, trained

def model():
    return trained(tiny_convnet(), tiny_data("conv", 96))

def data():
    d = tiny_data("conv", 96)
    return d.inputs[0], d.targets
"""
