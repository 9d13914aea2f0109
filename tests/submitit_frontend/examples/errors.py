from operator import truediv

import submitit

executor = submitit.AutoExecutor(folder="log_test", cluster="flow")
job = executor.submit(truediv, 1, 0)
try:
    job.result()
except submitit.core.utils.FailedJobError as error:
    print("failed as expected:", str(error).splitlines()[0])
    assert "ZeroDivisionError" in str(error)
else:
    raise AssertionError("no FailedJobError")
assert "ZeroDivisionError" in job.stderr()
print("state", job.state)
