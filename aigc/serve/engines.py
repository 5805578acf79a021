"""What runs beside the HTTP routes: a continuous text batch per language model, one lock per other
model (a translation decode uses every core), and this replica's job worker for the image models."""
from __future__ import annotations

import logging
import threading

from ..generate.continuous import ContinuousBatcher
from .imaging import run_batch
from .jobs import JobWorker
from .service import Service

log = logging.getLogger("aigc.serve")
IMAGE_ENDPOINT = "/v1/images/generations"


def start_engines(service: Service) -> None:
    service.prepare()
    runtime = service.runtime
    runtime["batchers"] = {name: ContinuousBatcher(m.model.model, m.model.tokenizer,
                                                   max_batch=service.engine.text_batch)
                           for name, m in service.models.items() if m.serves("/v1/completions")}
    runtime["locks"] = {name: threading.Lock() for name in service.models}
    image_models = [name for name, m in service.models.items() if m.serves(IMAGE_ENDPOINT)]
    if image_models:
        def run(jobs, reporter):
            served = service.models[jobs[0].model]
            return run_batch(served, jobs, reporter, on_images=lambda n: service.metrics.count_images(served.name, n))

        engine = service.engine
        runtime["worker"] = JobWorker(service.jobs, service.replica, image_models, run,
                                      max_batch=engine.image_batch, poll_s=engine.job_poll_s,
                                      lease_s=engine.job_lease_s, on_finished=service.job_finished).start()


def stop_engines(service: Service) -> None:
    """Graceful: stop taking jobs, let the running batch finish within the grace time, else re-queue it
    (another replica, or this one restarted, takes it); end the text batches."""
    runtime = service.runtime
    runtime["stopping"] = True
    worker = runtime.pop("worker", None)
    requeued = worker.stop(graceful=True, timeout=service.engine.shutdown_grace_s) if worker is not None else 0
    for batcher in runtime.pop("batchers", {}).values():
        batcher.close()
    log.info("aigc serve: stopped gracefully; %d running job(s) re-queued", requeued)
