"""Load local Hugging Face causal LMs and check that a student–teacher pair can be compared.

Context: every probe compares the two models' next-token distributions at the same prefix, so the
pair must share a tokenizer (same token→id map; differing special-token declarations, as in a
base student and its instruct teacher, are a warning). The logit width may still
differ (Qwen2.5-1.5B has 151,936 logit rows, -7B has 152,064, both with a 151,665-token tokenizer):
we compare over the shared range ``[0, compare_vocab)`` and record it in ``run.json``.

Loading is the normal HF path for any model directory: ``AutoModelForCausalLM.from_pretrained``
with ``use_safetensors=True`` and ``trust_remote_code=False`` unless the caller opts in.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import OpdDiagError
from .quiet import hf_progress_bars_off

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """A model, its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    path: str
    dtype: torch.dtype
    device: torch.device

    @property
    def logit_width(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def context_length(self) -> int | None:
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def generation_max_new_tokens(self) -> int | None:
        """``max_new_tokens`` of the model's generation config, when its directory sets one."""
        value = getattr(getattr(self.model, "generation_config", None), "max_new_tokens", None)
        return value if isinstance(value, int) and value > 0 else None

    def describe(self) -> dict:
        return {
            "path": self.path,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "architecture": (getattr(self.model.config, "architectures", None) or ["?"])[0],
            "n_params": int(sum(p.numel() for p in self.model.parameters())),
            "logit_width": self.logit_width,
            "tokenizer_len": len(self.tokenizer),
            "context_length": self.context_length,
        }


def resolve_max_new_tokens(value: int | None, model: LoadedModel,
                           flag: str = "--max-new-tokens") -> int:
    """The completion budget: ``value`` when given, else the model's
    ``generation_config.max_new_tokens``; an error when neither is set (a silent default far
    below a reasoning model's trace length truncates most rollouts and decides the verdict)."""
    if value is not None:
        return int(value)
    if model.generation_max_new_tokens is not None:
        return model.generation_max_new_tokens
    raise OpdDiagError(
        f"{flag} is required: {model.path!r} has no generation_config.json max_new_tokens to "
        "default to. Set it to the model's natural completion length (reasoning traces run to "
        "4K-16K tokens; rollouts cut at the cap are scored wrong and skew every verdict)")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise OpdDiagError(
            f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}"
        ) from None


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise OpdDiagError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OpdDiagError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def _check_model_dir(path: Path, role: str) -> None:
    if not path.exists():
        raise OpdDiagError(f"{role} model directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise OpdDiagError(f"{role} model path {str(path)!r} is not a directory")
    if not (path / "config.json").is_file():
        raise OpdDiagError(
            f"{role} model directory {str(path)!r} has no config.json: not a Hugging Face model "
            "directory (save one with model.save_pretrained(dir))"
        )
    weights = list(path.glob("*.safetensors"))
    if not weights:
        other = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {other}; convert them to safetensors)" if other else ""
        raise OpdDiagError(f"{role} model directory {str(path)!r} has no *.safetensors weights{hint}")
    with open(path / "config.json") as fh:
        try:
            json.load(fh)
        except json.JSONDecodeError as exc:
            raise OpdDiagError(f"{role} config.json in {str(path)!r} is not valid JSON: {exc}") from None
    for file in weights:
        _check_safetensors(file, role)


def _check_safetensors(file: Path, role: str) -> None:
    """A truncated or header-corrupted weights file is an OpdDiagError naming it (the header
    is read, the tensors are not: an 8-byte length, a JSON header, data up to the last offset)."""
    fix = "the file is damaged: re-download or re-save the model (model.save_pretrained(dir))"
    size = file.stat().st_size
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit the file's {size} bytes")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, KeyError, TypeError, IndexError, OSError) as exc:
        raise OpdDiagError(f"{role} weights {str(file)!r} are corrupt ({exc}); {fix}") from None
    if 8 + n + end > size:
        raise OpdDiagError(f"{role} weights {str(file)!r} are truncated ({size} bytes, the header "
                           f"promises {8 + n + end}); {fix}")


def _check_remote_code(path: Path, role: str, trust_remote_code: bool) -> None:
    """A config with ``auto_map`` names custom modelling code; loading it without that code
    would silently give the built-in architecture instead, so it is refused."""
    if trust_remote_code:
        return
    auto_map = json.loads((path / "config.json").read_text()).get("auto_map")
    if auto_map:
        raise OpdDiagError(
            f"{role} config.json in {str(path)!r} has auto_map {sorted(auto_map)}: the model "
            "ships its own modelling code, which opd-diag does not run by default; pass "
            "--trust-remote-code (trust_remote_code=True) if you trust it, or remove auto_map "
            "from config.json to load the built-in architecture"
        )


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """Load the tokenizer of a local model directory (no hub access)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise OpdDiagError(f"cannot load a tokenizer from {str(path)!r}: {exc}") from None


def load_model(
    path: str | Path,
    *,
    role: str = "model",
    dtype: str | torch.dtype = "float32",
    device: str | torch.device | None = "cpu",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a local HF causal-LM directory in eval mode.

    Args:
        path: a directory with config.json, *.safetensors weights and tokenizer files.
        role: "student" / "teacher", used in error messages.
        dtype: weights dtype; probes always accumulate in float32 whatever this is.
        device: "cpu", "cuda", "cuda:1" or "auto".
        trust_remote_code: run custom modelling code shipped in the directory. Off by default:
            a model directory is untrusted input.
    """
    from transformers import AutoModelForCausalLM

    path = Path(path)
    _check_model_dir(path, role)
    _check_remote_code(path, role, trust_remote_code)
    torch_dtype = resolve_dtype(dtype)
    dev = resolve_device(device)
    tokenizer = load_tokenizer(path, trust_remote_code)
    try:
        with hf_progress_bars_off():
            model = AutoModelForCausalLM.from_pretrained(
                str(path),
                dtype=torch_dtype,
                use_safetensors=True,
                trust_remote_code=trust_remote_code,
                local_files_only=True,
            )
    except (OSError, ValueError, KeyError) as exc:
        raise OpdDiagError(f"cannot load {role} model from {str(path)!r}: {exc}") from None
    except Exception as exc:  # safetensors' SafetensorError: a corrupt file the header check missed
        if type(exc).__name__ != "SafetensorError":
            raise
        raise OpdDiagError(f"cannot load {role} weights from {str(path)!r}: {exc}; a weights file "
                           "is damaged: re-download or re-save the model") from None
    model.to(dev).eval()
    if tokenizer.pad_token_id is None:
        # Padding positions are masked everywhere; any id works, EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)
    return LoadedModel(model, tokenizer, str(path), torch_dtype, dev)


def _special_tokens(tok) -> dict:
    names = ("bos_token", "eos_token", "pad_token", "unk_token")
    special = {name: getattr(tok, name, None) for name in names}
    special["additional"] = sorted(map(str, getattr(tok, "additional_special_tokens", None) or []))
    return special


def check_same_tokenizer(student_tok, teacher_tok) -> list[str]:
    """Raise a clear error unless both tokenizers map every token to the same id.

    Special-token *declarations* may differ (a base student ends with ``<|endoftext|>``, its
    instruct teacher with ``<|im_end|>``: the paper's setting); the token→id map may not.
    Returns the special-token differences as warning strings (pad tokens are not compared:
    padding is masked), which :func:`load_pair` prints and ``run.json`` records.
    """
    vs, vt = student_tok.get_vocab(), teacher_tok.get_vocab()
    if vs != vt:
        diffs = []
        for token in sorted(set(vs) | set(vt), key=lambda t: (vs.get(t, vt.get(t, 0)), t)):
            if vs.get(token) != vt.get(token):
                diffs.append(f"{token!r}: student id {vs.get(token)} vs teacher id {vt.get(token)}")
            if len(diffs) == 5:
                break
        raise OpdDiagError(
            "student and teacher tokenizers differ (cross-tokenizer OPD is not supported): "
            f"student has {len(vs)} tokens, teacher {len(vt)}; first differences: "
            + "; ".join(diffs)
        )
    ss, st = _special_tokens(student_tok), _special_tokens(teacher_tok)
    ss.pop("pad_token"), st.pop("pad_token")
    return [f"student and teacher declare different {name} (same token→id map, so the pair is "
            f"comparable): student {ss[name]!r}, teacher {st[name]!r}; sampling stops on the "
            "union of both models' EOS ids (run.json: models.stop_token_ids)"
            for name in ss if ss[name] != st[name]]


def model_eos_ids(model: LoadedModel) -> list[int]:
    """EOS ids of one model: its generation config's (may be several) and its tokenizer's."""
    ids: set[int] = set()
    gen = getattr(model.model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    if model.tokenizer.eos_token_id is not None:
        ids.add(int(model.tokenizer.eos_token_id))
    return sorted(ids)


@dataclass
class Pair:
    """A student and a teacher that can be compared token by token."""

    student: LoadedModel
    teacher: LoadedModel
    warnings: list[str] = field(default_factory=list)

    @property
    def tokenizer(self):
        return self.student.tokenizer

    @property
    def compare_vocab(self) -> int:
        """Ids ``[0, compare_vocab)`` are compared: the tokenizer range both logit heads cover."""
        return min(len(self.tokenizer), self.student.logit_width, self.teacher.logit_width)

    @property
    def stop_token_ids(self) -> list[int]:
        """Where student sampling stops: the union of both models' EOS ids (a base student
        prompted with its instruct teacher's chat template ends turns with the teacher's EOS)."""
        return sorted(set(model_eos_ids(self.student)) | set(model_eos_ids(self.teacher)))

    def describe(self) -> dict:
        return {
            "student": self.student.describe(),
            "teacher": self.teacher.describe(),
            "compare_vocab": self.compare_vocab,
            "stop_token_ids": {"student": model_eos_ids(self.student),
                               "teacher": model_eos_ids(self.teacher),
                               "used": self.stop_token_ids,
                               "note": "student sampling stops on the union of both EOS sets"},
            "tokenizer_warnings": list(self.warnings),
            "compare_note": (
                f"log-probs are normalised over token ids [0, {self.compare_vocab}) — the shared "
                f"tokenizer range; logit widths: student {self.student.logit_width}, teacher "
                f"{self.teacher.logit_width}, tokenizer {len(self.tokenizer)}"
            ),
        }


def load_pair(
    student: str | Path,
    teacher: str | Path,
    *,
    student_dtype: str = "float32",
    teacher_dtype: str = "float32",
    student_device: str | None = "cpu",
    teacher_device: str | None = "cpu",
    trust_remote_code: bool = False,
) -> Pair:
    """Load both models and check they share a tokenizer."""
    s = load_model(
        student, role="student", dtype=student_dtype, device=student_device,
        trust_remote_code=trust_remote_code,
    )
    t = load_model(
        teacher, role="teacher", dtype=teacher_dtype, device=teacher_device,
        trust_remote_code=trust_remote_code,
    )
    warnings = check_same_tokenizer(s.tokenizer, t.tokenizer)
    for msg in warnings:
        print(f"opd-diag: warning: {msg}", file=sys.stderr)
    return Pair(s, t, warnings)
