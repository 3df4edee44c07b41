"""Tiny random parts for tests (no downloads): a byte-level BPE tokenizer, a small Llama, a UNet."""
from __future__ import annotations

from pathlib import Path

from diffusers import UNet2DConditionModel
from transformers import LlamaConfig

SAMPLE_TEXT = [
    "A small red circle at the top left and a large blue square at the bottom right on a white background.",
    "On a black background there is a green triangle in the center, and to its left a yellow star.",
    "The picture shows two objects: a purple square near the top and an orange circle near the bottom.",
    "A big cyan triangle sits at the right; a tiny pink circle is at the left. The background is gray.",
]


def build_tiny_tokenizer(directory: str | Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE tokenizer (BOS added, right padding) and save it as a HF tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(SAMPLE_TEXT * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    directory = Path(directory)
    fast.save_pretrained(directory)
    return directory


def tiny_llama_config(vocab_size: int = 400, hidden_size: int = 64, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        tie_word_embeddings=False,
    )


def tiny_unet(
    cross_attention_dim: int = 64, sample_size: int = 16, channels: int = 3, pooled_text: bool = False,
    coordinates: bool = False,
) -> UNet2DConditionModel:
    """A ~0.3M-parameter UNet for fast tests (cross-attention at the lowest resolution only); `pooled_text` adds the
    pooled-paragraph input to the timestep embedding, `coordinates` the two pixel-coordinate input channels (see
    `paradiffusion.diffusion.conditioning`)."""
    pooled = dict(class_embed_type="projection", projection_class_embeddings_input_dim=cross_attention_dim)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=channels + (2 if coordinates else 0), out_channels=channels,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
        cross_attention_dim=cross_attention_dim, attention_head_dim=2, norm_num_groups=16,  # 2 heads x 32 dims
        **(pooled if pooled_text else {}),
    )
