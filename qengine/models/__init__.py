"""Reference models trained on Fashion-MNIST, and their sampler (see reference.py)."""
