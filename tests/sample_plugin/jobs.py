"""Jobs of the sample plugin."""
import os
import time


def tick() -> None:
    """Work for SAMPLE_TICK_SECONDS, then append this process id to SAMPLE_TICK_LOG."""
    time.sleep(float(os.environ["SAMPLE_TICK_SECONDS"]))
    with open(os.environ["SAMPLE_TICK_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{os.getpid()}\n")


def fail() -> None:
    raise RuntimeError("sample job failed on purpose")
