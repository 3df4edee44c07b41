"""paradiffusion: trainable ParaDiffusion (paragraph-to-image diffusion with a LoRA-adapted LLM)."""

__version__ = "0.1.0"
