use super::*;
use crate::policy::grants::Subject;

fn questions(n: usize) -> Vec<Question> {
    (0..n)
        .map(|i| {
            (
                Subject::new(&format!("user{i}"), &[]),
                format!("ns{}", i % 300),
            )
        })
        .collect()
}

#[test]
fn each_question_is_due_once_per_period_evenly_spread() {
    let t0 = Instant::now();
    let period = Duration::from_secs(60);
    let qs = questions(6000);
    let mut s = Spread::new(period, 1e9, t0);
    let mut per_second = Vec::new();
    let mut seen = std::collections::HashMap::new();
    // Three periods, woken as the loop would be (each tick).
    let mut now = t0;
    while now < t0 + 3 * period {
        now = s.next_wake();
        let due = s.due(qs.iter(), qs.len(), now);
        per_second.push(due.len());
        for q in due {
            *seen.entry(q).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), qs.len(), "every question re-asked");
    assert!(seen.values().all(|&n| n == 3), "once per period");
    // 6000 over 60 s is 100 per 1 s tick: no tick far from the mean.
    let max = per_second.iter().max().copied().unwrap_or(0);
    assert!(max < 160, "a burst of {max} in one tick");
    assert!(
        s.due(qs.iter(), qs.len(), now).is_empty(),
        "nothing twice at one instant"
    );
}

#[test]
fn a_late_wake_hands_out_what_fell_due_meanwhile() {
    let t0 = Instant::now();
    let qs = questions(100);
    let mut s = Spread::new(Duration::from_secs(10), 1e9, t0);
    assert_eq!(
        s.due(qs.iter(), 100, t0 + Duration::from_secs(10)).len(),
        100
    );
    assert!(
        s.due(qs.iter(), 100, t0 + Duration::from_secs(10))
            .is_empty()
    );
}

#[test]
fn more_answers_than_its_share_of_the_rate_limit_stretch_the_period() {
    // 6,000 answers (1,000 owners in 6 namespaces each), a 60 s period, 10 re-reviews a
    // second at most (half of 20/s): each is due once per 600 s, at 10 a second.
    let t0 = Instant::now();
    let qs = questions(6000);
    let mut s = Spread::new(Duration::from_secs(60), 10.0, t0);
    assert_eq!(s.period_for(qs.len()), Duration::from_secs(600));
    assert_eq!(
        s.period_for(300),
        Duration::from_secs(60),
        "the period is a floor"
    );
    let mut now = t0;
    let mut seen = std::collections::HashMap::new();
    let mut max_per_minute = std::collections::HashMap::new();
    while now < t0 + Duration::from_secs(1200) {
        now = s.next_wake();
        let due = s.due(qs.iter(), qs.len(), now);
        *max_per_minute.entry((now - t0).as_secs() / 60).or_insert(0) += due.len();
        for q in due {
            *seen.entry(q).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), qs.len());
    assert!(seen.values().all(|&n| n == 2), "once per 600 s");
    let max = max_per_minute.values().max().copied().unwrap_or(0);
    assert!(max <= 700, "{max} in a minute (10/s is 600)");
}

#[test]
fn the_bucket_paces_a_burst() {
    let t0 = Instant::now();
    let mut b = Bucket::new(20.0, 50, t0);
    assert_eq!(b.take(1000, t0), 50, "the burst");
    assert_eq!(b.take(1000, t0), 0);
    assert_eq!(b.next_token(t0), t0 + Duration::from_millis(50));
    assert_eq!(
        b.take(1000, t0 + Duration::from_secs(1)),
        20,
        "then the rate"
    );
    // 10 minutes of steady demand: 20/s on average.
    let mut sent = 0;
    for s in 2..=601 {
        sent += b.take(1000, t0 + Duration::from_secs(s));
    }
    assert_eq!(sent, 20 * 600);
    // Idle refills up to the burst, no more.
    assert_eq!(b.take(1000, t0 + Duration::from_secs(3600)), 50);
}
