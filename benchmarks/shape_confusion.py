"""Which shape a run draws, against the shape its prompt names.

  python benchmarks/shape_confusion.py --workdir runs/demo_sharp --scenes 128 [--eta 1]

Samples held-out scenes as `python -m lct_jax.evaluate` does (same seeds,
the run's sampling settings) and tallies the estimator's shape of every
generated shot (rows: the prompt's shape; columns: the estimate, or
unknown), then which shapes the recognised shots were read as. A model
that draws blobs shows a "circle" column (a large blob passes the circle
template) and a diagonal at chance; the non-circle figure (squares,
triangles and diamonds drawn as prompted) is 0 for such a model.
"""
import argparse
import collections

from lct_jax import evaluate
from lct_jax.data import estimators, synthetic


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--scenes", type=int, default=128)
  p.add_argument("--eta", type=float, default=None)
  p.add_argument("--step", type=int, default=None,
                 help="a checkpoint's step (default: the newest)")
  a = p.parse_args()
  config, sampler, step = evaluate.load_sampler(a.workdir, eta=a.eta,
                                                step=a.step)
  table, recognised = collections.Counter(), collections.Counter()
  for drawn, frames in evaluate.generate_held_out(config, sampler, a.scenes):
    for f, shot in zip(frames, drawn.shots):
      e = estimators.estimate_shot(f)
      table[shot.factors["shape"], e.factors["shape"]] += 1
      recognised[e.factors["shape"]] += e.recognised
  cols = list(synthetic.SHAPES) + ["unknown"]
  shots = sum(table.values())
  right = sum(table[s, s] for s in synthetic.SHAPES)
  # A model that draws one round blob scores the circle prompts' share on
  # the first figure and 0 on the second.
  angular = [s for s in synthetic.SHAPES if s != "circle"]
  angular_shots = sum(table[s, c] for s in angular for c in cols)
  angular_right = sum(table[s, s] for s in angular)
  print(f"{a.workdir} step {step}, eta {sampler.eta}: {shots} shots; "
        f"prompted shape drawn {right / shots:.3f} (chance 0.25); "
        f"non-circle prompts {angular_right / max(angular_shots, 1):.3f} "
        f"of {angular_shots}")
  print("| prompted \\ estimated | " + " | ".join(cols) + " |")
  print("|---" * (len(cols) + 1) + "|")
  for s in synthetic.SHAPES:
    print(f"| {s} | " + " | ".join(str(table[s, c]) for c in cols) + " |")
  print("recognised shots read as: " + ", ".join(
      f"{c} {recognised[c]}" for c in cols if recognised[c]))


if __name__ == "__main__":
  main()
