"""Model parts: the LLM text encoder (with LoRA), UNet/VAE builders and loaders."""
from paradiffusion.models.lora import LoRASettings
from paradiffusion.models.text_encoder import LLMTextEncoder

__all__ = ["LLMTextEncoder", "LoRASettings"]
