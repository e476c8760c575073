"""Advantage estimators for sequences: TD(0), Monte Carlo and GAE(lambda), and a demonstration of
their bias-variance trade-off on a problem whose true values are known exactly.

An episode is a sequence of steps t = 0..T-1 with rewards r_t and a learned value estimate
V(s_t) (the critic). The state after the last step is terminal, so V(s_T) = 0. In ppo.py a step
is one response token, the reward is -beta * KL on every token plus the score on the last one.

    TD residual          delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
    TD(0) advantage      A_t = delta_t                               (one real reward, then trust V)
    Monte Carlo          A_t = sum_{l>=0} gamma^l r_{t+l} - V(s_t)       (real rewards only, no V)
    GAE(lambda)          A_t = sum_{l>=0} (gamma lambda)^l delta_{t+l}
                             = delta_t + gamma lambda A_{t+1}               (the backward recursion)

lambda = 0 gives TD(0) and lambda = 1 gives Monte Carlo (the sum of residuals telescopes). The
value target (the "return" the critic regresses on) is A_t + V(s_t), taken before any whitening.
TD(0) leans on the critic for everything after one step: low variance, but biased wherever V
is wrong. Monte Carlo uses only real rewards: unbiased whatever V is, but it carries the noise of
every later step. lambda dials between them (Schulman et al. 2016, "High-dimensional continuous
control using generalized advantage estimation").

Batches are right-padded: every tensor is (B, T) with a 0/1 `mask` of valid steps. Padding
carries no reward and no value and stops bootstrapping, and advantages are zero on it.

Run:   python gae.py                 a table and out/gae/bias_variance.png (seconds)
       python gae.py --episodes 200  a quick look (noisier)
The demonstration is Sutton and Barto's 19-state random walk (Example 7.1; their Figure 12.3 runs
TD(lambda) on it): 19 states in a row, start in the middle, step left or right with probability
1/2; leaving on the left pays -1, on the right +1, nothing else pays. With gamma = 1 the true value
of state s is 2s/20 - 1. The critic is deliberately imperfect: it has learnt half the true slope
and is 0.2 too optimistic.
Like the score in RLHF, the only reward arrives at the end. Over many episodes we measure, for
each estimator, the bias and variance of its value target A_t + V(s_t) against the true V(s_t)
(the advantage differs from it by V(s_t), fixed given the state, so it has the same bias and
variance); `python gae.py -h` lists the flags.
"""
from __future__ import annotations

import argparse
import os
import sys

if sys.version_info < (3, 10):  # `X | None` types are evaluated at run time
    sys.stderr.write("error: Python 3.10 or newer is needed (this is %d.%d)\n"
                     % sys.version_info[:2])
    raise SystemExit(2)


import numpy as np
import torch


def td0_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float) -> torch.Tensor:
    """delta_t = r_t + gamma V(s_{t+1}) - V(s_t), with V = 0 after the last valid step. (B, T)."""
    rewards, values = rewards * mask, values * mask  # padding carries no reward and no value
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # V(s_{t+1})
    return (rewards + gamma * next_values - values) * mask


def mc_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                  gamma: float) -> torch.Tensor:
    """Discounted reward-to-go minus the value: G_t - V(s_t), G_t = r_t + gamma G_{t+1}. (B, T)."""
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)  # (B, T)
    future = torch.zeros_like(rewards[:, 0])  # G_{t+1}, (B,)
    for t in reversed(range(rewards.shape[1])):
        future = (rewards[:, t] + gamma * future) * mask[:, t]  # a padded step ends the episode
        returns[:, t] = future
    return (returns - values * mask) * mask


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float, lam: float) -> torch.Tensor:
    """GAE(lambda) by the backward recursion A_t = delta_t + gamma lambda A_{t+1}. (B, T)."""
    deltas = td0_advantages(rewards, values, mask, gamma)  # (B, T), zero on padding
    advantages = torch.zeros_like(deltas)
    next_advantage = torch.zeros_like(deltas[:, 0])  # A_{t+1}, (B,)
    for t in reversed(range(deltas.shape[1])):
        next_advantage = (deltas[:, t] + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    return advantages


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the valid entries only (population std); padding stays 0."""
    n = mask.sum()
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    return (x - mean) * torch.rsqrt(var + eps) * mask


# ----------------------------------------------------------------------------------------------
# The demonstration: bias and variance on a random walk whose true values are known
# ----------------------------------------------------------------------------------------------
def random_walk(n_states: int, episodes: int, rng: np.random.Generator):
    """Episodes of the random walk as right-padded (E, T) tensors: states (1..n), rewards, mask."""
    pos = np.full(episodes, (n_states + 1) // 2)  # every episode starts in the middle
    states, rewards, masks = [], [], []
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        states.append(np.where(alive, pos, 1))  # padding points at a real state; the mask hides it
        pos = pos + np.where(alive, rng.choice([-1, 1], size=episodes), 0)
        right, left = alive & (pos == n_states + 1), alive & (pos == 0)
        rewards.append(right.astype(np.float32) - left.astype(np.float32))
        masks.append(alive.astype(np.float32))
        alive = alive & ~right & ~left
    as_tensor = lambda rows, dtype: torch.tensor(np.stack(rows, axis=1), dtype=dtype)
    return (as_tensor(states, torch.long), as_tensor(rewards, torch.float32),
            as_tensor(masks, torch.float32))


def true_values(n_states: int, gamma: float) -> np.ndarray:
    """Solve the Bellman equation V = r + gamma P V exactly; index 0 is unused, states are 1..n."""
    P, r = np.zeros((n_states, n_states)), np.zeros(n_states)
    for i in range(n_states):  # state i + 1
        for j, pay in ((i - 1, -1.0), (i + 1, 1.0)):
            if 0 <= j < n_states:
                P[i, j] = 0.5
            else:
                r[i] += 0.5 * pay  # stepping off the end: expected reward, then terminal
    return np.concatenate([[0.0], np.linalg.solve(np.eye(n_states) - gamma * P, r)])


def bias_variance(estimates: torch.Tensor, states: torch.Tensor, mask: torch.Tensor, v_true):
    """Per state: bias = mean estimate - true value, variance over visits. Returns the
    visit-weighted mean of bias^2 and of variance, and the per-state means and stds (the plot)."""
    est, st = estimates[mask.bool()].double().numpy(), states[mask.bool()].numpy()
    n = np.bincount(st, minlength=len(v_true)).astype(float)
    mean = np.bincount(st, est, minlength=len(v_true)) / np.maximum(n, 1)
    var = np.bincount(st, est ** 2, minlength=len(v_true)) / np.maximum(n, 1) - mean ** 2
    w = n / n.sum()
    std = np.sqrt(np.maximum(var, 0))
    return float((w * (mean - v_true) ** 2).sum()), float((w * var).sum()), mean, std


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no usage block or traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None) -> list[dict]:
    first_paragraph = " ".join(__doc__.split("\n\n")[0].split())
    parser = _Parser(prog="gae.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                     description=first_paragraph + " The estimators, the random "
                     "walk and what is measured: see gae.py.")
    parser.add_argument("--states", type=int, default=19, help="non-terminal states in the walk")
    parser.add_argument("--episodes", type=int, default=4000, help="episodes to measure over")
    parser.add_argument("--gamma", type=float, default=1.0, help="discount factor")
    parser.add_argument("--seed", type=int, default=0, help="seeds the episodes")
    parser.add_argument("--out_dir", default="out/gae", help="where bias_variance.png goes")
    args = parser.parse_args(argv)
    if args.states < 3 or args.episodes < 10 or not 0 < args.gamma <= 1:
        parser.error("need --states >= 3, --episodes >= 10 and 0 < --gamma <= 1")

    rng = np.random.default_rng(args.seed)
    states, rewards, mask = random_walk(args.states, args.episodes, rng)
    v_true = true_values(args.states, args.gamma)  # (n + 1,)
    v_critic = 0.5 * v_true + 0.2  # the imperfect critic: half the slope, 0.2 too optimistic
    values = torch.tensor(v_critic, dtype=torch.float32)[states] * mask  # (E, T)
    print(f"random walk, {args.states} states, {args.episodes} episodes (mean length "
          f"{mask.sum(1).mean():.1f} steps), gamma {args.gamma}; critic V = 0.5 V_true + 0.2")
    # The claimed equivalences, shown rather than assumed: GAE(0) is TD(0), GAE(1) is Monte Carlo.
    for lam, other, fn in ((0.0, "TD(0)", td0_advantages), (1.0, "Monte Carlo", mc_advantages)):
        gap = (gae_advantages(rewards, values, mask, args.gamma, lam)
               - fn(rewards, values, mask, args.gamma)).abs().max().item()
        print(f"GAE(lambda={lam:.0f}) vs {other}: largest difference {gap:.1e} over every step")
    print(f"{'estimator':<12} {'lambda':>6} {'bias^2':>9} {'variance':>9} {'MSE':>9}")
    table, per_state = [], {}
    for lam in [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0]:
        name = {0.0: "TD(0)", 1.0: "Monte Carlo"}.get(lam, "GAE")
        advantages = gae_advantages(rewards, values, mask, args.gamma, lam)  # one estimator, all
        bias2, var, mean, std = bias_variance(advantages + values, states, mask, v_true)
        table.append({"estimator": name, "lambda": lam, "bias2": bias2, "variance": var,
                      "mse": bias2 + var})
        per_state[f"{name} (lambda {lam})"] = (mean, std)
        print(f"{name:<12} {lam:>6.2f} {bias2:>9.4f} {var:>9.4f} {bias2 + var:>9.4f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    lams = [row["lambda"] for row in table]
    for key, label in (("bias2", "bias$^2$"), ("variance", "variance"), ("mse", "MSE")):
        ax1.plot(lams, [row[key] for row in table], marker="o", label=label)
    ax1.set(xlabel="lambda  (0 = TD(0), 1 = Monte Carlo)",
            title="error of the value target A_t + V(s_t)",
            yscale="log")
    s = np.arange(1, args.states + 1)
    ax2.plot(s, v_true[1:], "k-", label="true V")
    ax2.plot(s, v_critic[1:], "k:", label="critic V")
    shown = ("TD(0) (lambda 0.0)", "GAE (lambda 0.9)", "Monte Carlo (lambda 1.0)")
    for shift, key in zip((-0.2, 0, 0.2), shown):
        mean, std = per_state[key]
        ax2.errorbar(s + shift, mean[1:], yerr=std[1:], fmt=".", capsize=2, alpha=0.7,
                     label=f"{key}, mean +- std")
    ax2.set(xlabel="state", title="value targets per state")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "bias_variance.png")
    fig.savefig(path + ".tmp.png", dpi=80)
    os.replace(path + ".tmp.png", path)  # atomic: a reader never sees half a file
    print(f"wrote {path}")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
