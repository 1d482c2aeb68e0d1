"""A container group's request body → the stored body, with Azure Container Instances' rules and
error codes. Pure functions: no store, no host. What kumo cannot run (Windows, Azure Files, the
confidential SKU, GPUs) is refused with an error naming the property, never silently ignored."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

from kumo.arm.errors import ArmError, bad_request
from kumo.arm.ids import parse_resource_id

SUBNET_TYPE = "microsoft.network/virtualnetworks/subnets"
# ACI's rule for group and container names: lower-case letters, digits and single '-', starting with a
# letter (groups may start with a digit) and ending with a letter or digit, 1-63 characters.
CONTAINER_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
GROUP_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
MAX_CPU, MAX_MEMORY_GB = 4.0, 16.0  # ACI's per-container maximums for Linux (standard SKU)
SECRET = "secureValue"
GIT_SCHEMES = ("https", "http", "git")  # the transports a gitRepo volume may clone over
DEFAULT_REQUESTS = {"cpu": 1.0, "memoryInGB": 1.5}  # what az and ACI use when a container names none


def invalid(code: str, message: str, target: str | None = None) -> ArmError:
    return bad_request(code, message, target)


def _canonical(value: Any, allowed: tuple[str, ...], field: str, default: str) -> str:
    if value is None or value == "":
        return default
    for a in allowed:
        if isinstance(value, str) and value.lower() == a.lower():
            return a
    raise invalid("InvalidRequestContent", f"The value '{value}' of '{field}' is invalid; allowed values are "
                  f"{', '.join(allowed)}.", field)


def _number(value: Any, field: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise invalid("InvalidRequestContent", f"'{field}' must be a number, not {value!r}.", field) from None
    if out != out or out < 0:
        raise invalid("InvalidRequestContent", f"'{field}' must be a positive number.", field)
    return out


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("InvalidRequestContent", f"'{field}' must be an array.", field)
    return value


def _props(raw: Any, field: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise invalid("InvalidRequestContent", f"'{field}' must be a JSON object.", field)
    props = raw.get("properties") or {}
    if not isinstance(props, dict):
        raise invalid("InvalidRequestContent", f"'{field}.properties' must be a JSON object.", field)
    return props


def _env(raw: Any, container: str) -> list[dict[str, Any]]:
    out = []
    for e in _list(raw, "environmentVariables"):
        name = e.get("name") if isinstance(e, dict) else None
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise invalid("InvalidEnvironmentVariable", f"The environment variable name '{name}' in container "
                          f"'{container}' is invalid.", "environmentVariables")
        item: dict[str, Any] = {"name": name}
        for key in (SECRET, "value"):  # a string (numbers and booleans read as one); never quote it back
            if isinstance(e.get(key), (dict, list)):
                raise invalid("InvalidRequestContent", f"The '{key}' of environment variable '{name}' in "
                              f"container '{container}' must be a string.", "environmentVariables")
        if e.get(SECRET) is not None:
            item[SECRET] = str(e[SECRET])
        else:
            item["value"] = "" if e.get("value") is None else str(e["value"])
        out.append(item)
    return out


def _ports(raw: Any, field: str) -> list[dict[str, Any]]:
    out = []
    for p in _list(raw, field):
        port = p.get("port") if isinstance(p, dict) else p
        try:
            number = int(port)
        except (TypeError, ValueError):
            number = 0
        if not 1 <= number <= 65535:
            raise invalid("InvalidContainerPort", f"The port '{port}' in '{field}' is invalid: ports are 1-65535.",
                          field)
        proto = _canonical(p.get("protocol") if isinstance(p, dict) else None, ("TCP", "UDP"), f"{field}.protocol",
                           "TCP")
        out.append({"protocol": proto, "port": number})
    return out


def _resources(raw: Any, container: str) -> dict[str, Any]:
    raw = raw or {"requests": dict(DEFAULT_REQUESTS)}  # newer api-versions make them optional
    requests = raw.get("requests")
    if not isinstance(requests, dict) or requests.get("memoryInGB") is None or requests.get("cpu") is None:
        raise invalid("ResourceRequestsNotSpecified", f"The resource requests (cpu and memoryInGB) of container "
                      f"'{container}' must be specified.", "resources.requests")
    out: dict[str, Any] = {}
    for part in ("requests", "limits"):
        value = raw.get(part)
        if value is None:
            continue
        if value.get("gpu"):
            raise invalid("UnsupportedFeature", f"kumo has no GPUs: remove 'resources.{part}.gpu' from container "
                          f"'{container}'.", f"resources.{part}.gpu")
        cpu = _number(value.get("cpu", requests["cpu"]), f"resources.{part}.cpu")
        memory = _number(value.get("memoryInGB", requests["memoryInGB"]), f"resources.{part}.memoryInGB")
        if cpu <= 0 or memory <= 0 or cpu > MAX_CPU or memory > MAX_MEMORY_GB:
            raise invalid("InvalidContainerResources", f"The {part} of container '{container}' (cpu {cpu}, memory "
                          f"{memory} GB) are out of range: cpu must be in (0, {MAX_CPU}] and memoryInGB in "
                          f"(0, {MAX_MEMORY_GB}].", f"resources.{part}")
        out[part] = {"cpu": cpu, "memoryInGB": memory}
    if "limits" in out and (out["limits"]["cpu"] < out["requests"]["cpu"]
                            or out["limits"]["memoryInGB"] < out["requests"]["memoryInGB"]):
        raise invalid("InvalidContainerResources", f"The resource limits of container '{container}' must not be "
                      "less than its requests.", "resources.limits")
    return out


def _probe(raw: Any, field: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("InvalidRequestContent", f"'{field}' must be a JSON object.", field)
    out: dict[str, Any] = {}
    if raw.get("exec"):
        command = _list(raw["exec"].get("command"), f"{field}.exec.command")
        if not command:
            raise invalid("InvalidProbe", f"'{field}.exec.command' must not be empty.", field)
        out["exec"] = {"command": [str(c) for c in command]}
    elif raw.get("httpGet"):
        get = raw["httpGet"]
        port = _ports([{"port": get.get("port")}], f"{field}.httpGet.port")[0]["port"]
        scheme = _canonical(get.get("scheme"), ("http", "https"), f"{field}.httpGet.scheme", "http")
        out["httpGet"] = {"path": str(get.get("path") or "/"), "port": port, "scheme": scheme,
                          "httpHeaders": get.get("httpHeaders") or []}
    else:
        raise invalid("InvalidProbe", f"'{field}' needs 'exec' or 'httpGet'.", field)
    for key, default in (("initialDelaySeconds", 0), ("periodSeconds", 10), ("failureThreshold", 3),
                         ("successThreshold", 1), ("timeoutSeconds", 1)):
        value = raw.get(key, default)
        try:
            out[key] = max(0 if key == "initialDelaySeconds" else 1, int(value))
        except (TypeError, ValueError):
            raise invalid("InvalidProbe", f"'{field}.{key}' must be an integer.", field) from None
    return out


def _mounts(raw: Any, container: str, volumes: set[str]) -> list[dict[str, Any]]:
    out = []
    for m in _list(raw, "volumeMounts"):
        if not isinstance(m, dict) or m.get("name") not in volumes:
            raise invalid("VolumeMountNameNotFound", f"The volume mount '{(m or {}).get('name')}' of container "
                          f"'{container}' does not refer to a volume of the container group.", "volumeMounts")
        path = m.get("mountPath")
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
            raise invalid("InvalidVolumeMountPath", f"The mount path '{path}' of container '{container}' must be an "
                          "absolute path.", "volumeMounts")
        out.append({"name": m["name"], "mountPath": path, "readOnly": bool(m.get("readOnly", False))})
    return out


def _container(raw: Any, index: int, volumes: set[str], *, init: bool) -> dict[str, Any]:
    field = "initContainers" if init else "containers"
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not CONTAINER_NAME.match(name) or "--" in name:
        raise invalid("InvalidContainerName", f"The container name '{name}' is invalid. A valid container name must "
                      "consist of lower case alphanumeric characters or '-', start with an alphabetic character, "
                      "and end with an alphanumeric character and can not contain '--'. The length must be "
                      "between 1 and 63.", f"{field}[{index}].name")
    props = _props(raw, f"{field}[{index}]")
    image = props.get("image")
    if not isinstance(image, str) or not image.strip():
        raise invalid("InvalidContainerImage", f"The image of container '{name}' must be specified.",
                      f"{field}[{index}].properties.image")
    out: dict[str, Any] = {"image": image.strip()}
    command = props.get("command")
    if command:
        out["command"] = [str(c) for c in _list(command, "command")]
    out["environmentVariables"] = _env(props.get("environmentVariables"), name)
    out["volumeMounts"] = _mounts(props.get("volumeMounts"), name, volumes)
    if not init:
        out["ports"] = _ports(props.get("ports"), f"containers[{index}].properties.ports")
        out["resources"] = _resources(props.get("resources"), name)
        for kind in ("livenessProbe", "readinessProbe"):
            probe = _probe(props.get(kind), kind)
            if probe:
                out[kind] = probe
        if isinstance(props.get("configMap"), dict):
            out["configMap"] = props["configMap"]
        if props.get("securityContext"):
            context = props["securityContext"]
            if context.get("privileged"):
                raise invalid("UnsupportedFeature", f"Privileged containers are not supported (container '{name}', "
                              "securityContext.privileged).", "securityContext.privileged")
            out["securityContext"] = context
    return {"name": name, "properties": out}


def _volume(raw: Any) -> dict[str, Any]:
    name = raw.get("name") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not CONTAINER_NAME.match(name):
        raise invalid("InvalidVolumeName", f"The volume name '{name}' is invalid.", "volumes")
    if raw.get("azureFile") is not None:
        raise invalid("UnsupportedFeature", f"Volume '{name}': kumo has no Azure Files service, so 'azureFile' "
                      "volumes cannot be mounted; use 'emptyDir', 'secret' or 'gitRepo'.", "volumes.azureFile")
    kinds = [k for k in ("emptyDir", "secret", "gitRepo") if raw.get(k) is not None]
    if len(kinds) != 1:
        raise invalid("InvalidVolume", f"Volume '{name}' must have exactly one of 'emptyDir', 'secret' or 'gitRepo'.",
                      "volumes")
    kind = kinds[0]
    if kind == "secret":
        secret = raw["secret"]
        if not isinstance(secret, dict):
            raise invalid("InvalidVolume", f"Volume '{name}': 'secret' must map file names to base64 values.",
                          "volumes.secret")
        for key, value in secret.items():
            if "/" in key or key in ("", ".", ".."):
                raise invalid("InvalidVolume", f"Volume '{name}': '{key}' is not a valid file name.", "volumes.secret")
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise invalid("InvalidVolume", f"Volume '{name}': the value of '{key}' must be base64.",
                              "volumes.secret") from None
        return {"name": name, "secret": {k: str(v) for k, v in secret.items()}}
    if kind == "gitRepo":
        repo = raw["gitRepo"]
        if not isinstance(repo, dict) or not isinstance(repo.get("repository"), str) or not repo["repository"]:
            raise invalid("InvalidVolume", f"Volume '{name}': 'gitRepo.repository' is required.", "volumes.gitRepo")
        url = urlsplit(repo["repository"])
        if url.scheme.lower() not in GIT_SCHEMES or not url.hostname:
            # kumo clones on the host: a path, file:// or ssh:// URL would copy the host's own files or keys
            raise invalid("InvalidVolume", f"Volume '{name}': 'gitRepo.repository' must be an https, http or git "
                          "URL of a repository.", "volumes.gitRepo")
        directory = repo.get("directory")
        if directory and (directory.startswith("/") or ".." in directory.split("/")):
            raise invalid("InvalidVolume", f"Volume '{name}': 'gitRepo.directory' must be relative.",
                          "volumes.gitRepo")
        return {"name": name, "gitRepo": {k: repo[k] for k in ("repository", "directory", "revision") if repo.get(k)}}
    return {"name": name, "emptyDir": {}}


def _ip_address(raw: Any, group: str, location: str, containers: list[dict[str, Any]],
                previous: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid("InvalidRequestContent", "'ipAddress' must be a JSON object.", "properties.ipAddress")
    kind = _canonical(raw.get("type"), ("Public", "Private"), "ipAddress.type", "Public")
    ports = _ports(raw.get("ports"), "ipAddress.ports")
    if not ports:
        raise invalid("InvalidIpAddressPorts", f"The IP address of container group '{group}' must expose at least "
                      "one port.", "properties.ipAddress.ports")
    exposed = {(p["protocol"], p["port"]) for c in containers for p in c["properties"]["ports"]}
    for p in ports:
        if (p["protocol"], p["port"]) not in exposed:
            raise invalid("InvalidIpAddressPorts", f"The port '{p['port']}' ({p['protocol']}) of the IP address of "
                          f"container group '{group}' is not exposed by any of its containers.",
                          "properties.ipAddress.ports")
    out: dict[str, Any] = {"ports": ports, "type": kind}
    label = raw.get("dnsNameLabel")
    if label:
        if kind == "Private":
            raise invalid("DnsNameLabelNotSupported", "A DNS name label needs a public IP address.",
                          "properties.ipAddress.dnsNameLabel")
        if not isinstance(label, str) or not DNS_LABEL.match(label):
            raise invalid("InvalidDnsNameLabel", f"The DNS name label '{label}' is invalid: 3-63 lower-case "
                          "letters, digits and '-', starting with a letter.", "properties.ipAddress.dnsNameLabel")
        out["dnsNameLabel"] = label
        out["fqdn"] = f"{label}.{location}.azurecontainer.io"
    if raw.get("autoGeneratedDomainNameLabelScope"):
        out["autoGeneratedDomainNameLabelScope"] = raw["autoGeneratedDomainNameLabelScope"]
    if previous and previous.get("type") == kind and previous.get("ip"):
        out["ip"] = previous["ip"]  # an update keeps the group's address
    return out


def normalise_group(name: str, location: str, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """The stored `properties` of a container group (without instance views and provisioning state)."""
    if not GROUP_NAME.match(name) or "--" in name:
        raise invalid("InvalidContainerGroupName", f"The container group name '{name}' is invalid. A valid name "
                      "must consist of lower case alphanumeric characters or '-', start and end with an "
                      "alphanumeric character and can not contain '--'. The length must be between 1 and 63.")
    props = body.get("properties")
    if not isinstance(props, dict):
        raise invalid("InvalidRequestContent", "'properties' must be a JSON object.", "properties")
    os_type = _canonical(props.get("osType"), ("Linux", "Windows"), "properties.osType", "Linux")
    if os_type == "Windows":
        raise invalid("UnsupportedFeature", "kumo runs Linux containers only: set 'properties.osType' to 'Linux'.",
                      "properties.osType")
    sku = _canonical(props.get("sku"), ("Standard", "Dedicated", "Confidential"), "properties.sku", "Standard")
    if sku == "Confidential" or props.get("confidentialComputeProperties"):
        raise invalid("UnsupportedFeature", "kumo has no confidential computing hardware: the 'Confidential' SKU "
                      "('properties.sku', 'confidentialComputeProperties') is not available.", "properties.sku")
    volumes = [_volume(v) for v in _list(props.get("volumes"), "properties.volumes")]
    names = [v["name"] for v in volumes]
    if len(set(names)) != len(names):
        raise invalid("DuplicateVolumeName", "Volume names in a container group must be unique.", "properties.volumes")
    raw_containers = _list(props.get("containers"), "properties.containers")
    if not raw_containers:
        raise invalid("ContainerGroupContainersRequired", f"The container group '{name}' must have at least one "
                      "container.", "properties.containers")
    containers = [_container(c, i, set(names), init=False) for i, c in enumerate(raw_containers)]
    inits = [_container(c, i, set(names), init=True)
             for i, c in enumerate(_list(props.get("initContainers"), "properties.initContainers"))]
    all_names = [c["name"] for c in (*containers, *inits)]
    if len(set(all_names)) != len(all_names):
        raise invalid("DuplicateContainerName", f"Container names in container group '{name}' must be unique.",
                      "properties.containers")
    previous = (existing or {}).get("ipAddress")
    out: dict[str, Any] = {
        "sku": sku, "osType": os_type, "containers": containers, "initContainers": inits,
        "restartPolicy": _canonical(props.get("restartPolicy"), RESTART_POLICIES, "properties.restartPolicy",
                                    "Always"),
        "volumes": volumes,
    }
    ip = _ip_address(props.get("ipAddress"), name, location, containers, previous)
    subnets = _list(props.get("subnetIds"), "properties.subnetIds")
    if subnets:
        ids = []
        for s in subnets:
            rid = parse_resource_id(s.get("id", "")) if isinstance(s, dict) else None
            if rid is None or rid.type_key != SUBNET_TYPE:
                raise invalid("InvalidSubnetId", f"'{s}' in 'properties.subnetIds' is not a subnet id.",
                              "properties.subnetIds")
            ids.append({"id": str(rid)})
        if len(ids) > 1:
            raise invalid("InvalidSubnetId", "A container group can be in one subnet only.", "properties.subnetIds")
        out["subnetIds"] = ids
        if ip is not None and ip["type"] == "Public":
            raise invalid("InvalidIpAddressType", "A container group in a virtual network has a private IP address: "
                          "set 'ipAddress.type' to 'Private'.", "properties.ipAddress.type")
    elif ip is not None and ip["type"] == "Private":
        raise invalid("PrivateIPAddressNeedsSubnet", "A private IP address needs 'properties.subnetIds'.",
                      "properties.subnetIds")
    if ip is not None:
        out["ipAddress"] = ip
    credentials = []
    for c in _list(props.get("imageRegistryCredentials"), "properties.imageRegistryCredentials"):
        if not isinstance(c, dict) or not isinstance(c.get("server"), str) or not c["server"]:
            raise invalid("InvalidImageRegistryCredential", "Each image registry credential needs a 'server'.",
                          "properties.imageRegistryCredentials")
        if c.get("identity"):
            raise invalid("UnsupportedFeature", "Registry credentials by managed identity are not supported by kumo; "
                          "use 'username' and 'password'.", "properties.imageRegistryCredentials.identity")
        if any(isinstance(c.get(k), (dict, list)) for k in ("username", "password")):
            raise invalid("InvalidImageRegistryCredential", f"The 'username' and 'password' of the credential for "
                          f"'{c['server']}' must be strings.", "properties.imageRegistryCredentials")
        credentials.append({"server": c["server"], "username": str(c.get("username") or ""),
                            "password": str(c.get("password") or "")})
    out["imageRegistryCredentials"] = credentials
    for key in ("dnsConfig", "diagnostics", "priority", "extensions"):
        if props.get(key) is not None:
            out[key] = props[key]
    return out


def public_view(props: dict[str, Any]) -> dict[str, Any]:
    """The properties as GET shows them: secrets (secure environment values, registry passwords, secret
    volume contents) are write-only, as on Azure."""
    out = dict(props)
    out["containers"] = [_hide_env(c) for c in props.get("containers", [])]
    out["initContainers"] = [_hide_env(c) for c in props.get("initContainers", [])]
    out["imageRegistryCredentials"] = [{k: v for k, v in c.items() if k != "password"}
                                       for c in props.get("imageRegistryCredentials", [])]
    out["volumes"] = [{**v, "secret": {}} if "secret" in v else v for v in props.get("volumes", [])]
    return out


def _hide_env(container: dict[str, Any]) -> dict[str, Any]:
    props = dict(container["properties"])
    props["environmentVariables"] = [{"name": e["name"]} if SECRET in e else e
                                     for e in props.get("environmentVariables", [])]
    return {**container, "properties": props}
