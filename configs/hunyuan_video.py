"""LCT on HunyuanVideo: the paper's recipe on the public 13B MMDiT.

The architecture is diffusers' `HunyuanVideoTransformer3DModel` at its
defaults (`lct_jax.convert.hunyuan.DIFFUSERS_DEFAULTS`: width 3072, 20
dual-stream and 40 single-stream blocks, a 2-layer token refiner, guidance
embedding, Llama text embeddings of width 4096 and CLIP pooled 768), so
that `train.init_from` takes the converted weights; scenes, stages,
training and the pod plan are `configs/lct_3b.py`'s (9 shots of 25 x 60 x
60 latents: 97 frames at 480 x 480 through the VAE). From your videos
(README, "From your videos to a trained LCT model"):

  python -m lct_jax.convert import --src /models/HunyuanVideo \\
      --dst ckpt/hunyuan --config configs/hunyuan_video.py:text_rope
  python -m lct_jax.convert vae import --src /models/HunyuanVideo \\
      --dst ckpt/hunyuan_vae
  python data/build.py folder --src my_scenes --data_dir data/tfds \\
      --vae ckpt/hunyuan_vae --text_encoders /models/HunyuanVideo \\
      --height 480 --width 480
  python train.py --config configs/hunyuan_video.py:text_rope \\
      --workdir runs/hv_text_rope --config.train.init_from=ckpt/hunyuan
  python train.py --config configs/hunyuan_video.py:lct \\
      --workdir runs/hv_lct --config.train.init_from=runs/hv_text_rope
  python train.py --config configs/hunyuan_video.py:causal \\
      --workdir runs/hv_causal --config.train.init_from=runs/hv_lct

Not compiled for a pod here: `configs/lct_3b.py`'s memory figures are for
its 3B model; check this one with `train.py --compile_for=...` first.
"""
from configs import lct_3b
from lct_jax.convert import hunyuan


def get_config(stage: str = "lct"):
  c = hunyuan.config_from_diffusers({}, lct_3b.get_config(stage))
  d = c.data
  d.source = "scene_folder"         # data/build.py folder --vae ...
  d.dir = "data/tfds"
  d.folder_kind = "latents"
  c.sample.vae = "ckpt/hunyuan_vae"   # sample.py decodes shots with it
  c.sample.steps, c.sample.cfg_scale = 50, 1.0  # HunyuanVideo's pipeline:
  c.sample.shift = 7.0                          # 50 steps, flow shift 7,
  return c                                      # distilled guidance
