"""daskweak: weak- and strong-scaling benchmark for Dask clusters (local, Slurm, Kubernetes)."""
