"""A container group's instance view as ACI reports it: the group's state, and per container the
current and previous state, the restart count and events (Pulling, Pulled, Started, Killing, …).
Pure functions over the stored body; the runner calls them as things happen on the host."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

MAX_EVENTS = 20  # per container, like ACI's short event list


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment else None


def container_view(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The instance view dict of container `name` (init or regular), created on first use."""
    props = body["properties"]
    for c in (*props.get("initContainers", []), *props.get("containers", [])):
        if c["name"] == name:
            return c["properties"].setdefault("instanceView", {"restartCount": 0, "events": []})
    return None


def add_event(view: dict[str, Any], name: str, message: str, kind: str = "Normal") -> None:
    """Repeated events are counted, as ACI (and Kubernetes under it) does."""
    stamp = now()
    events = view.setdefault("events", [])
    for e in events:
        if e["name"] == name and e["message"] == message:
            e["count"] += 1
            e["lastTimestamp"] = stamp
            return
    events.append({"count": 1, "firstTimestamp": stamp, "lastTimestamp": stamp, "name": name,
                   "message": message, "type": kind})
    del events[:-MAX_EVENTS]


def set_state(view: dict[str, Any], state: dict[str, Any]) -> None:
    """A new current state. As in ACI (Kubernetes' lastState), the previous state is the last run that
    ended: a terminated current state moves there when the container starts again."""
    current = view.get("currentState")
    if current and current.get("state") == "Terminated" and state.get("state") != "Terminated":
        view["previousState"] = current
    view["currentState"] = state


def waiting(detail: str) -> dict[str, Any]:
    return {"state": "Waiting", "detailStatus": detail}


def running(started: datetime | None) -> dict[str, Any]:
    return {"state": "Running", "startTime": iso(started) or now(), "detailStatus": ""}


def terminated(exit_code: int, oom: bool, started: datetime | None, finished: datetime | None) -> dict[str, Any]:
    detail = "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error")
    return {"state": "Terminated", "exitCode": exit_code, "startTime": iso(started),
            "finishTime": iso(finished) or now(), "detailStatus": detail}


def group_state(body: dict[str, Any], stopped: bool) -> str:
    """Pending until every container ran once; Running while any runs or will restart; then
    Succeeded when all ended with 0, else Failed (ACI's rules)."""
    if stopped:
        return "Stopped"
    props = body["properties"]
    states = [(c["properties"].get("instanceView") or {}).get("currentState") or {} for c in props["containers"]]
    if any(s.get("state") == "Running" for s in states):
        return "Running"
    if states and all(s.get("state") == "Terminated" for s in states):
        policy = props.get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and any(s.get("exitCode") != 0 for s in states)):
            return "Running"  # about to restart
        return "Succeeded" if all(s.get("exitCode") == 0 for s in states) else "Failed"
    if any(s.get("detailStatus") == "CrashLoopBackOff" for s in states):
        return "Running"
    return "Pending"


def should_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)
