"""The tiny random-weight LLM that `make setup` builds: no download, the same bytes every time."""

from __future__ import annotations

from pathlib import Path

from inference.build_tiny_llm import MARKER, build, main


def test_builds_a_loadable_model_deterministically(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    first = build(tmp_path / "a")
    second = build(tmp_path / "b")
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / MARKER).exists()
    config = AutoConfig.from_pretrained(first)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 2, 64)
    tokenizer = AutoTokenizer.from_pretrained(first)
    assert tokenizer.chat_template
    text = "Error E-417: déjà vu 🙂"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    # Built once: a second run leaves it as it is.
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert main(["--out", str(first)]) == 0
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
