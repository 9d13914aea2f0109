from math import ceil
from operator import add

import submitit

executor = submitit.AutoExecutor(folder="log_test", cluster="flow")
# 3 * 2 = 6 tasks
executor.update_parameters(tasks_per_node=3, nodes=2, timeout_min=1, slurm_partition="dev")
job = executor.submit(add, 5, 7)  # will compute add(5, 7)
print(job.task(2).result())  # Wait for task #2 result
print(job.task(2).stdout())  # Show task # stdout
print(job.results())  # Wait for all tasks and returns a list of results.
print(job.stdout())  # Concatenated stdout of all tasks
assert job.results() == [12] * 6


def process(chunk):
    return chunk


def my_func(inputs):
    job_env = submitit.JobEnvironment()
    print(f"There are {job_env.num_tasks} in this job")
    print(f"I'm the task #{job_env.local_rank} on the node {job_env.node}")
    print(f"I'm the task #{job_env.global_rank} in the job")
    num_items_per_task = int(ceil(len(inputs) / job_env.num_tasks))
    r = job_env.local_rank
    task_chunk = inputs[r * num_items_per_task : (r + 1) * num_items_per_task]
    return job_env.job_id, job_env.node, job_env.local_rank, len(job_env.hostnames), process(task_chunk)


job = executor.submit(my_func, list(range(12)))
results = job.results()
for result in results:
    print(result)
assert [r[0] for r in results] == [job.job_id] * 6
assert [(r[1], r[2]) for r in results] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
assert [r[3] for r in results] == [2] * 6
assert [r[4] for r in results] == [[0, 1], [2, 3], [4, 5]] * 2
assert "There are 6 in this job" in job.task(4).stdout()
