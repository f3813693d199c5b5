"""The label that lets a ClusterStack find the namespaces an earlier, dead run left behind."""

from shoal_sandbox import cluster_manifests as manifests


def test_a_runs_namespace_is_labelled_for_the_next_stacks_sweep() -> None:
    labels = manifests.namespace("e2e-1", ephemeral=True)["metadata"]["labels"]
    assert labels[manifests.STACK_NAMESPACE_LABEL] == "true"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_a_kept_namespace_is_not_swept() -> None:
    for doc in (manifests.namespace("shoal-demo"), manifests.namespace("shoal-system", restricted=False)):
        assert manifests.STACK_NAMESPACE_LABEL not in doc["metadata"]["labels"]
