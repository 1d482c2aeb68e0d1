"""`kumo az …` and `kumo env`: the real az CLI and SDKs pointed at kumo, with nothing to set up by hand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from kumo.config import Settings
from kumo.identity.directory import DefaultIdentity
from kumo.providers.compute.marketplace import ALIAS_DOC_PATH


def find_az() -> str:
    if env := os.environ.get("KUMO_AZ"):
        return env
    beside = Path(sys.executable).parent / "az"
    if beside.exists():
        return str(beside)
    if found := shutil.which("az"):
        return found
    raise click.ClickException("the az CLI was not found: run `make up` (it installs az 2.91 in .venv-az) "
                               "or `pip install azure-cli`, or set KUMO_AZ to its path")


def client_env(settings: Settings, endpoint: str) -> dict[str, str]:
    """Environment variables that point az, the SDKs and curl at this kumo."""
    paths = settings.paths
    ident = DefaultIdentity.load(paths.credentials)
    base = endpoint.rstrip("/")
    return {
        "KUMO_DATA_DIR": str(paths.root),
        "KUMO_ENDPOINT": endpoint,
        "AZURE_CONFIG_DIR": str(paths.az_config_dir),
        "REQUESTS_CA_BUNDLE": str(paths.ca_bundle),
        "WEBSOCKET_CLIENT_CA_BUNDLE": str(paths.ca_cert),
        "CURL_CA_BUNDLE": str(paths.ca_cert),
        "AZURE_AUTHORITY_HOST": base,
        "AZURE_TENANT_ID": ident.tenant_id,
        "AZURE_CLIENT_ID": ident.client_id,
        "AZURE_CLIENT_SECRET": ident.client_secret,
        "AZURE_SUBSCRIPTION_ID": ident.subscription_id,
        "IDENTITY_ENDPOINT": f"{base}/msi/token",
        "IDENTITY_HEADER": paths.msi_secret.read_text().strip(),
        "AZURE_CORE_INSTANCE_DISCOVERY": "false",
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
    }


def cloud_name(endpoint: str) -> str:
    port = endpoint.rstrip("/").rsplit(":", 1)[-1]
    return f"kumo-{port}" if port.isdigit() else "kumo"


def _az(az: str, env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([az, *args, "--only-show-errors", "-o", "none"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise click.ClickException(f"`az {' '.join(args[:3])}` failed while setting az up for kumo:\n"
                                   + "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-5:]))


def ensure_az_ready(settings: Settings, endpoint: str, az: str) -> dict[str, str]:
    """Register kumo's cloud in an isolated az config dir and log the default principal in, once."""
    env = {**os.environ, **client_env(settings, endpoint)}
    paths = settings.paths
    ident = DefaultIdentity.load(paths.credentials)
    marker = paths.az_config_dir / "kumo-setup.json"
    alias_doc = endpoint.rstrip("/") + ALIAS_DOC_PATH
    want = {"endpoint": endpoint, "client_id": ident.client_id, "tenant": ident.tenant_id,
            "ca": paths.ca_cert.read_text(), "alias_doc": alias_doc}
    try:
        if json.loads(marker.read_text()) == want:
            return env
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    paths.az_config_dir.mkdir(parents=True, exist_ok=True)
    name = cloud_name(endpoint)
    say = lambda m: click.echo(f"kumo: {m}", err=True)  # noqa: E731
    say(f"setting up az for kumo at {endpoint} (first use; config in {paths.az_config_dir})")
    _az(az, env, "config", "set", "core.instance_discovery=false", "core.collect_telemetry=false")
    clouds = paths.az_config_dir / "clouds.config"
    registered = clouds.read_text() if clouds.exists() else ""
    if f"[{name}]" not in registered:
        say(f"registering cloud '{name}'")  # az reads every endpoint, the image alias doc too, from kumo
        _az(az, env, "cloud", "register", "-n", name, "--endpoint-resource-manager", endpoint.rstrip("/"))
    elif alias_doc not in registered:  # registered by a kumo that did not serve image aliases yet
        _az(az, env, "cloud", "update", "-n", name, "--endpoint-vm-image-alias-doc", alias_doc)
    _az(az, env, "cloud", "set", "-n", name)
    say(f"logging in as service principal {ident.client_id}")
    _az(az, env, "login", "--service-principal", "-u", ident.client_id,
        f"--password={ident.client_secret}",  # one '=' argument: a secret may start with '-'
        "--tenant", ident.tenant_id)
    _az(az, env, "account", "set", "--subscription", ident.subscription_id)
    marker.write_text(json.dumps(want))
    return env


def shell_exports(env: dict[str, str]) -> str:
    lines = [f"export {k}={_quote(v)}" for k, v in env.items()]
    return "\n".join(lines)


def _quote(v: str) -> str:
    return "'" + v.replace("'", "'\"'\"'") + "'"
