"""shoal's container images, built without a Docker engine: a Debian base made with debootstrap, the
images built by buildah from the Dockerfiles in docker/, stored as OCI archives in $SHOAL_CACHE/images
under a content hash of their inputs, and listed in $SHOAL_CACHE/images/index.json.

Cheap to import; `shoal images build` lives in `shoal_sandbox.images.cli`.
"""
