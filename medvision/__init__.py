"""medvision: PyTorch Lightning building blocks and a CLI for 2D medical image deep learning."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # loaded on first use, so that ``import medvision`` stays light
    if name == "load_model":
        from medvision.inference import load_model

        return load_model
    raise AttributeError(f"module 'medvision' has no attribute {name!r}")
