"""Prefetching: read the next batch in a background thread while this one trains.

An image folder decodes its JPEGs with Pillow, file after file, in
``get_batch``.  Called from the training loop, decoding and training take
turns, and on a GPU the device waits for Pillow.  ``prefetch`` starts
``dataset.get_batch`` of batch k+1 in a worker thread as soon as batch k is
handed to the loop; Pillow and NumPy release the GIL while they decode and
copy, so reading the next batch overlaps with training on this one::

    for step, indices, (images, labels) in prefetch(dataset, iterate_batches(...)):
        ...                                  # the worker is reading batch step + 1

Nothing else changes: the same batches from the same indices, in the same
order, so a run is identical with or without it, and resumes the same.  An
error while reading batch k (a corrupt file) is raised when the loop reaches
batch k, as without prefetching.  One batch is read ahead, never more: memory
grows by one batch.
"""
from concurrent.futures import ThreadPoolExecutor


def prefetch(dataset, batches, enabled=True):
    """Yield ``(step, indices, dataset.get_batch(indices))`` for each ``(step, indices)``
    of ``batches``, the next batch being read meanwhile (``enabled=False``: in turn)."""
    if not enabled:
        for step, indices in batches:
            yield step, indices, dataset.get_batch(indices)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tinyalexnet-prefetch")
    try:
        ahead = None                                  # (step, indices, future) read ahead
        for step, indices in batches:
            future = pool.submit(dataset.get_batch, indices)
            if ahead is not None:
                yield ahead[0], ahead[1], ahead[2].result()   # batch step is being read now
            ahead = (step, indices, future)
        if ahead is not None:
            yield ahead[0], ahead[1], ahead[2].result()
    finally:
        # Stopped early (Ctrl-C, an error in a step) or done: drop what nobody will use.
        pool.shutdown(wait=True, cancel_futures=True)
