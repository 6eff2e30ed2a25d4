"""medvision: PyTorch Lightning building blocks and a CLI for 2D medical image deep learning."""

__version__ = "0.1.0"
