"""Samples scenes from a trained LCT model (joint, causal, bidirectional AR).

Not implemented yet: the sampling issue builds it on the model and the
checkpoints of the training loop. This entry point exists so the layout is
stable; it exits with an error rather than pretending to work.
"""
import sys

if __name__ == "__main__":
  sys.exit("sample.py: sampling is not implemented yet (see the sampling "
           "issue); nothing was generated.")
