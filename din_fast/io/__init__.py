"""The image layer: image files ⇄ tensors (``images``: read, list, write), MATLAB-compatible resizing and
degradations that make LR inputs from HR images (``degrade``), and atomic file writes (``atomic``).
Training, evaluation and upscaling all read and write images through this package."""
