"""Run by tests/test_train.py under torchrun: the same path as ``torchrun -m din_fast.train ARGS``, plus
each rank's final weights saved to ``OUT/rank{RANK}.pt`` so that the test can compare the replicas."""

import argparse
import os
import sys

import torch

from din_fast.train.trainer import add_arguments, config_from_args, train

parser = argparse.ArgumentParser()
add_arguments(parser)
config = config_from_args(parser.parse_args(sys.argv[1:]))
result = train(config)
torch.save(result.model.state_dict(), os.path.join(config.out, f"rank{os.environ['RANK']}.pt"))
