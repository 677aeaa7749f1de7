"""Training: the trainer (``trainer``: ``din-fast train``, ``python -m din_fast.train``, ``torchrun -m
din_fast.train``) and its data pipeline (``data``: image folders → random LR/HR patch pairs)."""
