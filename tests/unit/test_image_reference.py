"""Image references are parsed and normalised the way docker and containerd do it."""

from __future__ import annotations

import pytest

from kumo.images.reference import ImageReference, InvalidReference, parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("nginx", "docker.io", "library/nginx", "latest", None),
    ("nginx:1.25-alpine", "docker.io", "library/nginx", "1.25-alpine", None),
    ("library/busybox", "docker.io", "library/busybox", "latest", None),
    ("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None),
    ("docker.io/nginx", "docker.io", "library/nginx", "latest", None),
    ("index.docker.io/library/nginx:1", "docker.io", "library/nginx", "1", None),
    ("a/b/c/d", "docker.io", "a/b/c/d", "latest", None),
    ("mcr.microsoft.com/azuredocs/aci-helloworld", "mcr.microsoft.com", "azuredocs/aci-helloworld", "latest", None),
    ("mcr.microsoft.com/azuredocs/aci-helloworld:v1", "mcr.microsoft.com", "azuredocs/aci-helloworld", "v1", None),
    ("myreg.azurecr.io/team/app@" + D, "myreg.azurecr.io", "team/app", None, D),
    ("localhost/foo", "localhost", "foo", "latest", None),
    ("localhost:5000/foo/bar:v2", "localhost:5000", "foo/bar", "v2", None),
    ("host:5000/repo/name:tag", "host:5000", "repo/name", "tag", None),
    ("127.0.0.1:5000/a/b/c:1.0-rc_1", "127.0.0.1:5000", "a/b/c", "1.0-rc_1", None),
    ("[::1]:5000/repo:tag", "[::1]:5000", "repo", "tag", None),
    ("UpperHost/x", "UpperHost", "x", "latest", None),  # docker: upper case makes it a host
    ("repo@" + D, "docker.io", "library/repo", None, D),
    ("repo:tag@" + D, "docker.io", "library/repo", "tag", D),
    ("host:5000/repo:tag@" + D, "host:5000", "repo", "tag", D),
    ("foo_bar/baz-qux.x__y---z", "docker.io", "foo_bar/baz-qux.x__y---z", "latest", None),
    ("nginx:" + "T" * 128, "docker.io", "library/nginx", "T" * 128, None),
    ("app@sha512:" + "cd" * 64, "docker.io", "library/app", None, "sha512:" + "cd" * 64),
])
def test_valid_references(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert ref == ImageReference(registry, repository, tag, digest)
    # Normalised references parse to themselves.
    assert parse_reference(str(ref)) == ref


def test_string_forms() -> None:
    assert str(parse_reference("nginx")) == "docker.io/library/nginx:latest"
    assert parse_reference("nginx").familiar == "nginx:latest"
    assert parse_reference("bitnami/redis").familiar == "bitnami/redis:latest"
    assert parse_reference("library/a/b").familiar == "library/a/b:latest"
    assert parse_reference("h:5/x:1@" + D).familiar == "h:5/x:1@" + D
    ref = parse_reference("repo:tag@" + D)
    assert ref.reference == D and ref.name == "docker.io/library/repo"
    assert parse_reference("repo:tag").reference == "tag"
    assert parse_reference("repo").with_digest(D) == ImageReference("docker.io", "library/repo", "latest", D)


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("Nginx", "repository name must be lowercase"),
    ("myhost:5000/Team/app", "repository name must be lowercase"),
    ("nginx:", "tag ''"),
    ("nginx:-bad", "tag '-bad'"),
    ("nginx:" + "a" * 129, "must be 1-128"),
    ("nginx:a/b", "registry host 'nginx:a'"),
    ("nginx@sha256:abc", "sha256 digest must be 64 lower-case hex digits"),
    ("nginx@sha256:" + "AB" * 32, "lower-case hex"),
    ("nginx@md5:" + "ab" * 16, "unsupported digest algorithm 'md5'"),
    ("nginx@latest", "is not of the form algorithm:hex"),
    ("foo//bar", "empty path component"),
    ("foo/", "empty path component"),
    ("host:5000/", "missing repository name"),
    (":tag", "missing repository name"),
    ("@" + D, "missing repository name"),
    ("foo bar", "contains whitespace"),
    (" nginx", "contains whitespace"),
    ("-foo", "path component '-foo'"),
    ("foo..bar", "path component 'foo..bar'"),
    ("foo/bar_", "path component 'bar_'"),
    ("ho_st.io/x", "registry host 'ho_st.io'"),
    ("host:port/x", "registry host 'host:port'"),
    ("a" * 64, "image id"),
    ("x/" + "a" * 260, "longer than 255"),
])
def test_invalid_references(text: str, why: str) -> None:
    with pytest.raises(InvalidReference) as err:
        parse_reference(text)
    assert str(err.value).startswith(f"invalid image reference {text!r}: ")
    assert why in str(err.value)
    assert isinstance(err.value, ValueError)
