"""Run command (`POST …/virtualMachines/{vm}/runCommand`): a shell script run as root in the guest through
the QEMU guest agent, answered as Azure's RunCommandResult at the operation's Location URL.

Azure's Linux run command writes the script to a file and runs it; `parameters` arrive as the script's
positional arguments in order (`az vm run-command invoke --scripts 'echo $1' --parameters hello`), and a
named parameter (anything but az's generated `argN`) is also exported as an environment variable. bash
runs the script when the guest has it, else /bin/sh. Output is cut to its last 4096 bytes per stream, as
Azure does."""

from __future__ import annotations

import re
from typing import Any

from kumo.arm.errors import ArmError, bad_request

LINUX_COMMANDS = {"runshellscript": "RunShellScript", "ifconfig": "ifconfig"}
MAX_OUTPUT = 4096
TIMEOUT = 90 * 60.0  # Azure: a run command ends after 90 minutes
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POSITIONAL = re.compile(r"^arg\d+$", re.I)

# Receives the script on stdin, keeps it in a file and runs it with the parameters as $1…
RUNNER = ('f=$(mktemp /tmp/runcommand.XXXXXX) && cat > "$f" && chmod 700 "$f"; '
          'if [ -x /bin/bash ]; then /bin/bash "$f" "$@"; else /bin/sh "$f" "$@"; fi; rc=$?; rm -f "$f"; exit $rc')


def parse(body: Any) -> dict[str, Any]:
    """The request body → {script, args, env}, with Azure's errors for what it refuses."""
    if not isinstance(body, dict):
        raise bad_request("InvalidRequestContent", "The run command request body must be a JSON object.")
    command = str(body.get("commandId") or "")
    known = LINUX_COMMANDS.get(command.lower())
    if known is None:
        raise bad_request("InvalidParameter", f"Run command '{command}' is not supported for os type Linux. The "
                          f"supported commands are: {', '.join(LINUX_COMMANDS.values())}.", "commandId")
    script = body.get("script")
    if known == "ifconfig":
        script = ["ip address show 2>/dev/null || ifconfig -a"]
    if script is None or not isinstance(script, list) or not all(isinstance(s, str) for s in script):
        raise bad_request("InvalidParameter", "'script' must be an array of lines for RunShellScript.", "script")
    params = body.get("parameters") or []
    if not isinstance(params, list):
        raise bad_request("InvalidParameter", "'parameters' must be an array of {name, value}.", "parameters")
    args, env = [], {}
    for p in params:
        if not isinstance(p, dict) or "value" not in p:
            raise bad_request("InvalidParameter", "Each run command parameter needs a 'value'.", "parameters")
        value = str(p["value"])
        args.append(value)
        name = str(p.get("name") or "")
        if name and not _POSITIONAL.match(name):
            if not _ENV_NAME.match(name):
                raise bad_request("InvalidParameter", f"Run command parameter name '{name}' is not a valid "
                                  "environment variable name.", "parameters")
            env[name] = value
    return {"script": "\n".join(script) + "\n", "args": args, "env": env}


def argv(command: dict[str, Any]) -> list[str]:
    exports = "".join(f"export {k}='{v.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'; "
                      for k, v in command["env"].items())
    return ["/bin/sh", "-c", exports + RUNNER, "runcommand", *command["args"]]


def _tail(data: bytes) -> str:
    return data[-MAX_OUTPUT:].decode(errors="replace")


def result(code: int, out: bytes, err: bytes) -> dict[str, Any]:
    """Azure's RunCommandResult for an exit code and the captured streams."""
    streams = f"[stdout]\n{_tail(out)}\n[stderr]\n{_tail(err)}\n"
    if code == 0:
        status = {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
                  "message": f"Enable succeeded: \n{streams}"}
    else:
        status = {"code": "ProvisioningState/failed", "level": "Error", "displayStatus": "Provisioning failed",
                  "message": f"Enable failed: failed to execute command: command terminated with exit status={code}"
                             f"\n{streams}"}
    return {"value": [status]}


def not_running(name: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", f"Cannot run command on virtual machine '{name}': it is not "
                    "running. Start it first (az vm start).")
