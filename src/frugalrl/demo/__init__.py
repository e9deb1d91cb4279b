"""The built-in task and tiny model that let the whole loop run offline on a CPU."""
