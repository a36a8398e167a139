"""Known public traces: where each lives, its sha256, and a verified download into a cache folder.

A download streams into a temporary file in the cache folder, hashing as it goes, and is renamed into
place only when the sha256 matches, so the cache never holds a partial or altered trace. A cached file
is re-hashed before it is trusted. ``base_url`` (or the ``TOKENSTACK_TRACE_BASE_URL`` environment
variable) replaces the public address with a mirror laid out like ``../shared/traces/``
(``<base_url>/<name's relative path>``): for air-gapped machines and for tests against a local server.
Traces whose files are not directly downloadable (Azure 2024 blobs, BurstGPT LFS) are not listed.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tokenstack_sim.errors import InputError
from tokenstack_sim.atomic_io import atomic_write

BASE_URL_ENV = "TOKENSTACK_TRACE_BASE_URL"
CACHE_ENV = "TOKENSTACK_CACHE_DIR"
_AZURE = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/b469a113cedca53ddc3bdea71a143dc4b7d8700c/data"
_MOONCAKE = "https://raw.githubusercontent.com/kvcache-ai/Mooncake/3b5a594133958449a1feaf1c9e0fc1b553e34a28/FAST25-release/traces"


@dataclass(frozen=True)
class KnownTrace:
    url: str
    relative_path: str  # layout of the mirror and of the cache folder
    sha256: str
    licence: str


# Commits and sha256 values: ../shared/traces/README.md.
KNOWN_TRACES = {
    "azure2023-code": KnownTrace(
        f"{_AZURE}/AzureLLMInferenceTrace_code.csv", "azure2023/AzureLLMInferenceTrace_code.csv",
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6", "CC-BY-4.0; cite Splitwise (ISCA'24)",
    ),
    "azure2023-conv": KnownTrace(
        f"{_AZURE}/AzureLLMInferenceTrace_conv.csv", "azure2023/AzureLLMInferenceTrace_conv.csv",
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8", "CC-BY-4.0; cite Splitwise (ISCA'24)",
    ),
    "mooncake-conversation": KnownTrace(
        f"{_MOONCAKE}/conversation_trace.jsonl", "mooncake_fast25/conversation_trace.jsonl",
        "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df", "Apache-2.0 (repository); cite Mooncake (FAST'25)",
    ),
    "mooncake-synthetic": KnownTrace(
        f"{_MOONCAKE}/synthetic_trace.jsonl", "mooncake_fast25/synthetic_trace.jsonl",
        "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131", "Apache-2.0 (repository); cite Mooncake (FAST'25)",
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tokenstack" / "traces")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, cache_dir: str | Path | None = None, base_url: str | None = None, timeout_s: float = 60.0) -> Path:
    """Path of the verified trace in the cache, downloading it first if needed."""
    if name not in KNOWN_TRACES:
        raise InputError(f"unknown trace {name!r}; known: {', '.join(KNOWN_TRACES)}", where="fetch")
    known = KNOWN_TRACES[name]
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = target / known.relative_path
    if target.is_file() and _sha256_of(target) == known.sha256:
        return target
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    url = f"{base_url.rstrip('/')}/{known.relative_path}" if base_url else known.url
    digest = hashlib.sha256()
    try:
        with atomic_write(target, "wb", suffix=".part") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != known.sha256:
                raise InputError(f"sha256 mismatch: expected {known.sha256}, got {digest.hexdigest()}", source=url)
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(f"download failed ({getattr(exc, 'reason', exc)})", source=url) from None
    return target
