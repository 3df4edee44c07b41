import os

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARAPROMPTS = SHARED / "data" / "paraprompts-400" / "ParaPrompts_400.csv"


@pytest.fixture
def paraprompts_csv():
    if not PARAPROMPTS.exists():
        pytest.skip("../shared/data/paraprompts-400 is absent")
    return PARAPROMPTS
