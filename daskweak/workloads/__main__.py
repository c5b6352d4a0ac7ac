"""`python -m daskweak.workloads` prints README.md's operations table from the workload definitions."""

from daskweak.workloads import operations_table

if __name__ == "__main__":
    print(operations_table(), end="")
