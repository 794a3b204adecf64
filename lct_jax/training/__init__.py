"""Train state, optimizer and the jitted step (the loop is train.py)."""
from lct_jax.training.optim import (Optimizer, make_optimizer, make_schedule,
                                   optimizer_for)
from lct_jax.training.state import (TrainState, abstract_model, count_params,
                                    create_train_state, init_model)
from lct_jax.training.step import (TrainStep, compute_grads, grads_and_stats,
                                   make_train_step, train_step)
