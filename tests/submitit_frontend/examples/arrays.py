import submitit


def add(a, b):
    return a + b


log_folder = "log_test/%j"
a = [1, 2, 3, 4]
b = [10, 20, 30, 40]
executor = submitit.AutoExecutor(folder=log_folder, cluster="flow")
# the following line tells the scheduler to only run\
# at most 2 jobs at once. By default, this is several hundreds
executor.update_parameters(slurm_array_parallelism=2)
jobs = executor.map_array(add, a, b)  # just a list of jobs
assert [job.result() for job in jobs] == [11, 22, 33, 44]

jobs = []
with executor.batch():
    for arg in [5, 6, 7]:
        job = executor.submit(add, arg, 1)
        jobs.append(job)
assert [job.result() for job in jobs] == [6, 7, 8]
print("ids", " ".join(job.job_id for job in jobs))
