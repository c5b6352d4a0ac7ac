"""Kubernetes through the dask-kubernetes operator: everything this deployment needs, in one folder.

- `backend`: a DaskCluster per step, created, watched and deleted over the API (kr8s);
- `manifests`: the DaskCluster and DaskWorkerGroup of a step as pure data;
- `tls_secret`: the kubernetes.io/tls Secret made from CERT_DIR (`daskweak k8s-secret`);
- `kubeconfig`: an Airflow Connection's credentials handed to a step as a private kubeconfig;
- `nodes`: the types of the nodes the Dask pods can land on, for the run's hardware class.
"""
