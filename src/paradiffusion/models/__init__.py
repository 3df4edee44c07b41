"""Model parts: the LLM text encoder (with LoRA), connectors, UNet/VAE builders and loaders."""
from paradiffusion.models.connector import TextConnector, TextRefiner, TokenGate
from paradiffusion.models.lora import LoRASettings
from paradiffusion.models.text_encoder import LLMTextEncoder

__all__ = ["LLMTextEncoder", "LoRASettings", "TextConnector", "TextRefiner", "TokenGate"]
