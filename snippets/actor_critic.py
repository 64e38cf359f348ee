"""A 1-D point mass (scalar LQR) and two tiny actor-critic learners in numpy.

Used by notes/posts/actor-critic-ddpg.md. State x, action a, next state x' = x + B a + noise,
reward -(x^2 + C a^2). Policies are linear in x, critics are linear in quadratic features, so every
gradient is written out by hand and the exact optimum is known from the Riccati equation.
"""

import numpy as np

B, C, GAMMA, NOISE = 0.5, 0.5, 0.9, 0.05


def env_step(x, a, rng):
    reward = -(x**2 + C * a**2)
    x_next = x + B * a + NOISE * rng.standard_normal(x.shape)
    return x_next, reward


def riccati_optimum(n_iter=500):
    """Optimal gain K* (a = -K* x) and value coefficient P* (V*(x) = -P* x^2 + const)."""
    p = 0.0
    for _ in range(n_iter):
        p = 1.0 + GAMMA * p - (GAMMA * B * p) ** 2 / (C + GAMMA * B**2 * p)
    k = GAMMA * B * p / (C + GAMMA * B**2 * p)
    return k, p


def policy_cost(k):
    """Noise-free discounted cost of a = -k x from x0 ~ U(-2, 2): E[x0^2] * (1 + C k^2) / (1 - gamma (1 - B k)^2)."""
    k = np.asarray(k, dtype=np.float64)
    rho = GAMMA * (1.0 - B * k) ** 2
    with np.errstate(divide="ignore"):
        return np.where(rho < 1, (4.0 / 3.0) * (1 + C * k**2) / (1 - rho), np.inf)


def train_actor_critic(n_iters=400, n_envs=256, sigma=0.5, lr_actor=0.02, lr_critic=0.05,
                       reset_prob=0.05, seed=0):
    """One-step advantage actor-critic: Gaussian policy N(-k x, sigma^2), critic V(x) = w0 x^2 + w1."""
    rng = np.random.default_rng(seed)
    k, w = 0.0, np.zeros(2)
    x = rng.uniform(-2, 2, n_envs)
    history = []
    for _ in range(n_iters):
        mean = -k * x
        a = mean + sigma * rng.standard_normal(n_envs)
        x_next, r = env_step(x, a, rng)
        phi, phi_next = np.stack([x**2, np.ones_like(x)], 1), np.stack([x_next**2, np.ones_like(x)], 1)
        delta = r + GAMMA * phi_next @ w - phi @ w            # TD error = advantage estimate
        w += lr_critic * (delta[:, None] * phi).mean(0) / (1 + (phi**2).sum(1).mean())
        score_k = (a - mean) / sigma**2 * (-x)                # d/dk log pi(a | x)
        k += lr_actor * np.mean(delta * score_k)
        reset = rng.random(n_envs) < reset_prob
        x = np.where(reset, rng.uniform(-2, 2, n_envs), x_next)
        history.append(k)
    return np.array(history), w


def train_ddpg(n_steps=3000, batch=64, buffer_size=20000, noise=0.3, lr_actor=0.01, lr_critic=0.05,
               tau=0.02, reset_prob=0.05, warmup=200, seed=0):
    """DDPG with one environment: mu(x) = -k x, Q(x, a) = w . [x^2, x a, a^2, 1], target copies, replay."""
    rng = np.random.default_rng(seed)
    k, w = 0.0, np.zeros(4)
    k_targ, w_targ = k, w.copy()
    buf = np.zeros((buffer_size, 4))                          # (x, a, r, x')
    size, ptr = 0, 0
    x = rng.uniform(-2, 2, 1)
    feats = lambda s, u: np.stack([s**2, s * u, u**2, np.ones_like(s)], 1)
    history = []
    for _ in range(n_steps):
        a = -k * x + noise * rng.standard_normal(1)           # behaviour policy = actor + Gaussian noise
        x_next, r = env_step(x, a, rng)
        buf[ptr] = (x[0], a[0], r[0], x_next[0])
        ptr, size = (ptr + 1) % buffer_size, min(size + 1, buffer_size)
        x = rng.uniform(-2, 2, 1) if rng.random() < reset_prob else x_next
        if size >= warmup:
            s, u, rew, s2 = buf[rng.integers(0, size, batch)].T
            y = rew + GAMMA * feats(s2, -k_targ * s2) @ w_targ     # target networks give the bootstrap
            phi = feats(s, u)
            w += lr_critic * ((y - phi @ w)[:, None] * phi).mean(0) / (1 + (phi**2).sum(1).mean())
            a_pi = -k * s
            dq_da = w[1] * s + 2 * w[2] * a_pi                    # grad_a Q(s, a) at a = mu(s)
            k += lr_actor * np.mean(dq_da * (-s))                 # chain rule through dmu/dk = -s
            k_targ += tau * (k - k_targ)                          # Polyak averaging
            w_targ += tau * (w - w_targ)
        history.append(k)
    return np.array(history), w
