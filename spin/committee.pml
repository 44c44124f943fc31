/*
 * The committee protocol of phalanx.engine.committee, one round, as a Promela model for SPIN.
 *
 * The protocol is PBFT's normal case and view change (Castro and Liskov, "Practical Byzantine
 * Fault Tolerance", OSDI 1999, sections 4.2 to 4.4) with Phalanx's names: in view w the
 * sequencer (validator w mod N) proposes the round's batch; each validator recomputes the
 * aggregate and ECHOes (PBFT's prepare) the value it got; a validator that sees Q echoes for the
 * value it echoed holds a PREPARED certificate and SIGNs the value (PBFT's commit); Q signatures
 * on one value in one view are the round's CERTIFICATE (the value is decided). On a timeout a
 * validator moves to view w+1 and REPORTs its prepared certificate (or none); a proposal in view
 * w > 0 is accepted only if Q reports justify it: none of them holds a certificate, or the
 * highest-view certificate among them is for the proposed value.
 *
 * Compile-time parameters (spin -D...):
 *   N   validators, Q quorum (the protocol uses Q = floor(2N/3) + 1),
 *   B   Byzantine validators, C crashed ones (faulty indices: 0..B-1 Byzantine, then C crashed;
 *       so the first sequencers are the faulty ones, the worst case for a round),
 *   NV  views explored, LIVE 1 for the liveness model (timeouts only under a faulty sequencer).
 *
 * How the state space is bounded, and why that is sound:
 *   - Two candidate values (0 and 1): a conflict needs only two; a Byzantine sequencer may send
 *     either to each validator (equivocation).
 *   - Byzantine validators are not processes: every echo, signature or report count includes
 *     all B of them for every (view, value) at once, and a Byzantine report may be "none" or any
 *     certificate that really exists (Q echoes, theirs included). That is the most a Byzantine
 *     validator can contribute to any quorum, since it cannot forge an honest signature; every
 *     Byzantine behaviour (silence, double signing, wrong hashes that nobody counts) is a subset.
 *   - A crashed validator is an honest one that never acts; honest validators may also stop at
 *     any point (SPIN explores every interleaving, including those where a process never runs).
 *   - Views are bounded by NV: enough for one view per faulty sequencer and one honest one.
 *   - Counters replace message buffers and histories: what a validator may do depends only on
 *     how many echoes or reports of each kind exist, which is how the protocol counts its
 *     quorums; a validator keeps only what it holds in its current view (its echo, whether it
 *     signed) and its prepared certificate, which is all the protocol lets it use later.
 * Checked properties: agreement (assert: never two decided values) in every model; in the
 * liveness model, the LTL property 'live': the round is eventually decided, under weak fairness.
 */

#ifndef N
#define N 4
#endif
#ifndef Q
#define Q 3
#endif
#ifndef B
#define B 1
#endif
#ifndef C
#define C 0
#endif
#ifndef NV
#define NV 3
#endif
#ifndef LIVE
#define LIVE 0
#endif

#define NONE 255
#define FAULTY(k) ((k) < B + C)
#define BYZ(k) ((k) < B)
#define SEQ(w) ((w) % N)
#define IDX(w, x) ((w) * 2 + (x))
#define K (1 + 2 * NV)                /* report kinds: 0 none, 1 + 2u + x a certificate (u, x) */
#define KIND(v, x) ((v) == NONE -> 0 : 1 + 2 * (v) + (x))

byte vw[N];              /* each validator's current view */
byte ec[N];              /* the value it echoed in that view (NONE: not yet) */
bool sg[N];              /* it signed in that view */
byte pv[N];              /* view of its prepared certificate (NONE: none) */
byte px[N];              /* and its value */
byte rep[NV * K];        /* honest reports per (view entered, kind) */
byte echo[NV * 2];       /* honest echoes per (view, value) */
byte sig[NV * 2];        /* honest signatures per (view, value) */
byte prop[NV];           /* an honest sequencer's one proposal per view (NONE: not yet) */
bool jus[NV * 2];        /* a proposal of value x in view w is justified (derived state) */
bool decided[2];

/* scratch for justify() and do_sign(): hidden, so they are no part of the state vector */
hidden byte w_, u_, x_, k_, cnt_, none_, show_, x1;

/* recompute jus[] from the reports and echo counts: a function of the state, adds no states */
inline justify() {
  w_ = 1;
  do
  :: w_ < NV ->
     none_ = rep[w_ * K] + B;          /* case a: Q reporters without a certificate */
     x_ = 0;
     do
     :: x_ < 2 ->
        jus[IDX(w_, x_)] = (none_ >= Q);
        /* case b: among Q reporters the highest certificate is (u_, x_); a Byzantine reporter
           may show it only if it exists (Q echoes, its own included) */
        u_ = 0;
        cnt_ = none_;
        do
        :: u_ < w_ && !jus[IDX(w_, x_)] ->
           show_ = (rep[w_ * K + 1 + 2 * u_ + x_] > 0 || (B > 0 && echo[IDX(u_, x_)] + B >= Q));
           jus[IDX(w_, x_)] = (show_ && cnt_ + rep[w_ * K + 1 + 2 * u_ + x_] >= Q);
           /* certificates of view u_ (both values) are lower than any of a later view */
           cnt_ = cnt_ + rep[w_ * K + 1 + 2 * u_] + rep[w_ * K + 2 + 2 * u_];
           u_++
        :: else -> break
        od;
        x_++
     :: else -> break
     od;
     w_++
  :: else -> break
  od;
  skip   /* the loops' exit stays inside the d_step */
}

/* an honest validator echoes value x in its view: the sequencer sent x (a Byzantine one may send
   either value to each validator; an honest one sends one value) and x is justified */
#define CAN_ECHO(i, x) (ec[i] == NONE && (vw[i] == 0 || jus[IDX(vw[i], x)]) && \
  (BYZ(SEQ(vw[i])) || !FAULTY(SEQ(vw[i])) && (prop[vw[i]] == NONE || prop[vw[i]] == x)))

/* it signs once it sees Q echoes (its own, other honest ones, the Byzantine ones) for its value */
#define CAN_SIGN(i) (ec[i] != NONE && !sg[i] && echo[IDX(vw[i], ec[i])] + B >= Q)

#if LIVE
/* after GST a timeout fires only under a faulty sequencer, and stops once the round is decided */
#define CAN_TIMEOUT(i) (vw[i] < NV - 1 && FAULTY(SEQ(vw[i])) && !decided[0] && !decided[1])
#else
/* safety must hold whatever the timing: a timeout may fire at any moment */
#define CAN_TIMEOUT(i) (vw[i] < NV - 1)
#endif

inline do_echo(i, x) {
  if :: !FAULTY(SEQ(vw[i])) -> prop[vw[i]] = x :: else fi;
  ec[i] = x;
  echo[IDX(vw[i], x)]++;
  d_step { justify() }
}

inline do_sign(i) {
  x1 = ec[i];
  sg[i] = true;
  pv[i] = vw[i]; px[i] = x1;
  sig[IDX(vw[i], x1)]++;
  if
  :: sig[IDX(vw[i], x1)] + B >= Q -> decided[x1] = true
  :: else
  fi;
  assert(!(decided[0] && decided[1]))   /* agreement */
}

inline do_timeout(i) {
  vw[i]++;
  ec[i] = NONE;
  sg[i] = false;
  rep[vw[i] * K + KIND(pv[i], px[i])]++;
  d_step { justify() }
}

proctype Validator(byte i) {
end:
  do
  :: atomic { CAN_ECHO(i, 0) -> do_echo(i, 0) }
  :: atomic { CAN_ECHO(i, 1) -> do_echo(i, 1) }
  :: atomic { CAN_SIGN(i) -> do_sign(i) }
  :: atomic { CAN_TIMEOUT(i) -> do_timeout(i) }
  od
}

init {
  byte k;
  atomic {
    k = 0;
    do
    :: k < NV -> prop[k] = NONE; k++
    :: else -> break
    od;
    k = 0;
    do
    :: k < N -> ec[k] = NONE; pv[k] = NONE; px[k] = NONE; k++
    :: else -> break
    od;
    k = B + C;
    do
    :: k < N -> run Validator(k); k++
    :: else -> break
    od;
    k = 0
  }
}

#if LIVE
ltl live { <> (decided[0] || decided[1]) }
#endif
