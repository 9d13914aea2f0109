"""Slurm: #SBATCH parsing, job script rendering, Slurm states."""
