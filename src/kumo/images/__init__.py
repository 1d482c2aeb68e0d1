"""Pulling OCI/Docker images from registries into a local content-addressed layer store.

`reference` parses image names the way docker and containerd do, `registry_client` speaks the pull side
of the OCI distribution API (auth, manifests, verified blobs), and `store` keeps blobs and unpacked
layers on disk so an overlay mount can use them as `lowerdir=`.
"""
