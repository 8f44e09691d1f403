//! Budgets: cost, jobs, PM rounds and wall time, checked before a unit starts.

use crate::model::{Assignment, Job, JobType, Millis};

fn money(v: f64) -> String {
    format!("${v:.2}")
}

use crate::clock::duration_text;

/// Why starting `unit` now would break a budget, if it would.
pub(super) fn over_budget(doc: &Assignment, unit: &[&Job], now: Millis) -> Option<String> {
    let b = &doc.budget;
    if let Some(reason) = cost_over_budget(doc) {
        return Some(reason);
    }
    if let (Some(max), Some(start)) = (b.max_wall_ms, doc.started_at) {
        if now.saturating_sub(start) >= max {
            return Some(format!(
                "budget exceeded: running for {}, maxWallMs is {}",
                duration_text(now - start),
                duration_text(max)
            ));
        }
    }
    let new_work = unit
        .iter()
        .filter(|j| j.job_type != JobType::Pm && j.attempt == 0)
        .count() as u32;
    if let Some(max) = b.max_jobs {
        let started = doc.archive.started
            + doc
                .jobs
                .iter()
                .filter(|j| j.job_type != JobType::Pm && j.attempt > 0)
                .count() as u32;
        if new_work > 0 && started + new_work > max {
            return Some(format!(
                "budget exceeded: {started} jobs started, maxJobs is {max}"
            ));
        }
    }
    let new_reviews = unit
        .iter()
        .any(|j| j.job_type == JobType::Review && j.attempt == 0);
    if new_reviews {
        let max = b
            .max_review_cycles
            .unwrap_or(crate::model::DEFAULT_MAX_REVIEW_CYCLES);
        let reviews = doc.archive.reviews
            + doc
                .jobs
                .iter()
                .filter(|j| j.job_type == JobType::Review && j.attempt > 0)
                .count() as u32;
        if reviews >= max {
            return Some(format!(
                "budget exceeded: {reviews} review cycles, maxReviewCycles is {max}; a human decides what comes next"
            ));
        }
    }
    if let Some(max) = b.max_pm_rounds {
        if unit
            .iter()
            .any(|j| j.job_type == JobType::Pm && j.attempt == 0)
            && doc.pm_rounds >= max
        {
            return Some(format!(
                "budget exceeded: {} PM rounds, maxPmRounds is {max}",
                doc.pm_rounds
            ));
        }
    }
    None
}

/// The reason, if the assignment has spent more than its cost budget.
pub fn cost_over_budget(doc: &Assignment) -> Option<String> {
    let max = doc.budget.max_cost_usd?;
    let spent = doc.usage.cost_usd.unwrap_or(0.0);
    (spent >= max).then(|| {
        format!(
            "budget exceeded: spent {}, maxCostUsd is {}",
            money(spent),
            money(max)
        )
    })
}

/// When the wall-time budget of `doc` runs out, if it has one.
pub fn wall_deadline(doc: &Assignment) -> Option<Millis> {
    Some(doc.started_at? + doc.budget.max_wall_ms?)
}
