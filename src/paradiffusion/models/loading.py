"""Loading a diffusers model directory offline: one checked path for the UNet and the VAE."""
from __future__ import annotations

import os
from typing import Literal, TypeVar

import torch

from paradiffusion.models.text_encoder import _own_memory

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Dtype = Literal["float32", "bfloat16", "float16"]
M = TypeVar("M")


def load_diffusers_dir(cls: type[M], path: str, subfolder: str | None, dtype: Dtype, caller: str) -> M:
    """`cls.from_pretrained(path, subfolder)` after checking the directory, with a clear error naming `caller`."""
    where = os.path.join(path, subfolder) if subfolder else path
    if not os.path.isfile(os.path.join(where, "config.json")):
        raise FileNotFoundError(f"{caller}: {where}/config.json not found (expected a diffusers {cls.__name__} directory)")
    model = cls.from_pretrained(path, subfolder=subfolder, torch_dtype=DTYPES[dtype])
    _own_memory(model)  # bitwise-reproducible CPU kernels (see models.text_encoder._own_memory)
    return model
