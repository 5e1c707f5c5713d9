"""Collection: the one labelling-and-mixing step, the collector (local or Ray) and replayable envs."""
