from k8s.fixtures import k8s_cluster, k8s_namespace  # noqa: F401
