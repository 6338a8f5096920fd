"""Model specs: builtin models, torchvision, Python factories and saved programs."""
