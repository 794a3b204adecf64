"""The scene record schema: round trip and bad records named by scene id."""
import json

import numpy as np
import pytest

from lct_jax.data.records import (BadRecordError, scene_to_record,
                                  split_shots, validate_record)
from lct_jax.data.synthetic import generate_scene


def test_round_trip_of_a_generated_scene():
  scene = generate_scene(11, max_shots=5)
  rec = validate_record(scene_to_record(scene))
  shots = split_shots(rec)
  assert len(shots) == len(scene.shots) == len(rec["shot_prompts"])
  for shot, frames, prompt in zip(scene.shots, shots, rec["shot_prompts"]):
    assert np.array_equal(shot.frames, frames) and shot.prompt == prompt
  assert json.loads(rec["factors_json"]) == [s.factors for s in scene.shots]


def test_bytes_fields_are_decoded():
  rec = scene_to_record(generate_scene(1))
  rec = dict(rec, scene_id=rec["scene_id"].encode(),
             shot_prompts=[p.encode() for p in rec["shot_prompts"]])
  out = validate_record(rec)
  assert isinstance(out["scene_id"], str)
  assert all(isinstance(p, str) for p in out["shot_prompts"])


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r.update(frames=r["frames"][:-1]), "truncated or corrupt"),
    (lambda r: r.update(shot_num_frames=np.zeros(0, np.int32),
                        shot_prompts=[], has_cut=np.zeros(0, bool)),
     "empty scene"),
    (lambda r: r.update(frames=r["frames"][..., :2]), "uint8 RGB"),
    (lambda r: r.update(shot_prompts=r["shot_prompts"] + ["extra"]),
     "prompts"),
    (lambda r: r.pop("global_prompt"), "missing fields"),
    (lambda r: r.update(latents=np.zeros((1, 4, 4, 4), np.float16)),
     "exactly one of"),
])
def test_bad_records_name_the_scene(edit, msg):
  rec = scene_to_record(generate_scene(7))
  edit(rec)
  with pytest.raises(BadRecordError, match=msg) as err:
    validate_record(rec)
  assert "synthetic-00000007" in str(err.value)
  assert err.value.scene_id == "synthetic-00000007"
