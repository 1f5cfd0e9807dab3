"""Single-map Ray Data datasets (pipelines.runtime.datasets) on the session's local Ray."""

from __future__ import annotations


def test_single_map_datasets_skip_the_reservation_and_leave_the_process_context_alone(ray_local):
    """Ingest's one-operator datasets run without Ray Data's per-operator
    reservation (it idled half of a small node); other pipelines of the same
    driver keep the process-wide setting."""
    import ray

    from pipelines.runtime.datasets import run_map, single_map_dataset

    context = ray.data.DataContext.get_current()
    assert context.op_resource_reservation_enabled
    dataset = single_map_dataset([{"x": 1}, {"x": 2}], lambda row: {"y": row["x"] * 10}, 1)
    assert dataset.context.op_resource_reservation_enabled is False
    assert context.op_resource_reservation_enabled
    assert sorted(r["y"] for r in run_map([{"x": 3}, {"x": 4}], lambda row: {"y": row["x"] * 10}, 1, "t", "item", False)) == [30, 40]
    assert context.op_resource_reservation_enabled
