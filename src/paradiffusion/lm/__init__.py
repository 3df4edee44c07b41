"""Stage 0: a small Llama-architecture language model pretrained here, standing in for Llama-2-7b's weights.

- `paradiffusion.lm.tokenizer`: byte-level BPE tokenizer (`train_bpe_tokenizer`, `load_tokenizer`).
- `paradiffusion.lm.data.LMTextDataModule`: injected text sources / text files -> packed token blocks.
- `paradiffusion.lm.text_sources`: `TextSource` (what a source implements), `TextFiles`.
- `paradiffusion.lm.module.CausalLMPretrain`: the LightningModule; writes a Hugging Face directory at fit end.
- `paradiffusion.lm.export.export_hf(ckpt_path, out_dir)`: checkpoint -> Hugging Face directory.

Submodules are not imported here so that `import paradiffusion.lm.tokenizer` stays light.
"""
