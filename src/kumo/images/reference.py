"""Image references (`nginx`, `host:5000/repo:tag`, `repo@sha256:…`) parsed and normalised like docker.

The grammar follows distribution/reference: an optional registry host (recognised by a `.` or `:`, by
being `localhost`, or by an upper-case letter), lower-case path components, an optional tag and an
optional digest. Docker Hub names get `docker.io` and, for single-component names, `library/`; a
reference with neither tag nor digest means `:latest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's other spellings, normalised as docker does.
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io"}
_MAX_NAME = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
# Only the algorithms registries use; the hex length is checked because digests become file names.
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([0-9a-fA-F]+)")
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")


class InvalidReference(ValueError):
    """A reference that docker would refuse too; the message says which part is wrong."""

    def __init__(self, text: str, why: str) -> None:
        self.text, self.why = text, why
        super().__init__(f"invalid image reference {text!r}: {why}")


@dataclass(frozen=True)
class ImageReference:
    """A normalised reference: `registry/repository[:tag][@digest]`."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after `/manifests/`: the digest when there is one (it wins over the tag)."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def familiar(self) -> str:
        """The short form docker prints (`nginx:latest`, `myhost:5000/app:1`)."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository.removeprefix("library/") if self.repository.count("/") == 1 else self.repository
        return name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.registry, self.repository, self.tag, validate_digest(digest))

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def validate_digest(digest: str, text: str | None = None) -> str:
    """Return `digest` if it is `sha256:<64 hex>` or `sha512:<128 hex>` (lower-case), else raise."""
    m = _DIGEST.fullmatch(digest)
    if not m:
        raise InvalidReference(text or digest, f"digest {digest!r} is not of the form algorithm:hex")
    algo, hexpart = m.groups()
    if algo not in _DIGEST_HEX:
        raise InvalidReference(text or digest, f"unsupported digest algorithm {algo!r} (sha256 or sha512)")
    if len(hexpart) != _DIGEST_HEX[algo] or hexpart != hexpart.lower():
        raise InvalidReference(text or digest, f"{algo} digest must be {_DIGEST_HEX[algo]} lower-case hex digits")
    return digest


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise an image reference; raise InvalidReference saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise InvalidReference(str(text), "empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(text, "contains whitespace")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        validate_digest(digest, text)
    tag = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(text, f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with . or -")
    if not rest:
        raise InvalidReference(text, "missing repository name")
    registry, path = _split_registry(rest)
    if registry is None:
        registry = DEFAULT_REGISTRY
    elif not _DOMAIN.fullmatch(registry):
        raise InvalidReference(text, f"registry host {registry!r} is not a valid host[:port]")
    if registry in _HUB_ALIASES:
        registry = DEFAULT_REGISTRY
    if not path:
        raise InvalidReference(text, "missing repository name")
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not component:
            raise InvalidReference(text, "empty path component (double or trailing slash)")
        if component != component.lower() and _COMPONENT.fullmatch(component.lower()):
            raise InvalidReference(text, "repository name must be lowercase")
        if not _COMPONENT.fullmatch(component):
            raise InvalidReference(
                text, f"path component {component!r} must be lower-case letters and digits separated by . _ __ or -")
    if registry == DEFAULT_REGISTRY and _IMAGE_ID.fullmatch(path.removeprefix("library/")):
        raise InvalidReference(text, "a 64-character hex string is an image id, not a repository name")
    if len(registry) + 1 + len(path) > _MAX_NAME:
        raise InvalidReference(text, f"name longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry, path, tag, digest)


def _split_registry(name: str) -> tuple[str | None, str]:
    """Docker's rule: the first component is a host if it has `.` or `:`, is localhost or has upper case."""
    first, sep, rest = name.partition("/")
    if not sep:
        return None, name
    if "." in first or ":" in first or first == "localhost" or first != first.lower():
        return first, rest
    return None, name
