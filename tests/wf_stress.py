"""The workflow of the queue stress test, served by worker subprocesses (`python -m durable worker tests.wf_stress`).

Its step appends one line per execution to the file named by DURABLE_STRESS_LOG (O_APPEND: lines from several
processes never interleave), so the test can count how often each body ran.
"""

from __future__ import annotations

import asyncio
import os

import durable


@durable.step(retry=durable.Retry(max_attempts=1))
async def work(tag: str, seconds: float) -> str:
    await asyncio.sleep(seconds)
    line = f"{tag} {os.getpid()}\n".encode()
    fd = os.open(os.environ["DURABLE_STRESS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return tag


@durable.workflow(name="stress")
async def stress(ctx: durable.WorkflowContext, tag: str, seconds: float) -> str:
    return await work(tag, seconds)
