//! Salt's state compiler: high data (the merged, rendered SLS files of
//! one run, with each id's `__sls__`/`__env__`) → a [`Lowstate`], the
//! ordered low chunks `state.show_lowstate` prints, with `extend:`
//! merged, `names:` expanded, `_in` requisites turned around onto their
//! targets, `use` arguments copied, and every requisite resolved to
//! chunk indexes with cycles rejected. Errors are Salt's `_errors`
//! strings, all of them collected rather than the first.

use serde_json::{Map, Value};

/// The requisite kinds the compiler knows, without the `_in` forms.
pub const REQUISITES: &[&str] = &[
    "require",
    "watch",
    "onchanges",
    "onfail",
    "prereq",
    "use",
    "require_any",
    "watch_any",
    "onchanges_any",
    "onfail_any",
];

/// Salt's `state_auto_order` starts definition order at this number.
const AUTO_ORDER_BASE: u64 = 10000;

/// One low chunk: the flat dict Salt's `state.show_lowstate` prints
/// (`state`, `__id__`, `name`, `fun`, `order`, `__sls__`, `__env__`,
/// the arguments and the requisites as written).
#[derive(Debug, Clone, PartialEq)]
pub struct LowChunk(Map<String, Value>);

impl LowChunk {
    fn str_field(&self, key: &str) -> &str {
        self.0.get(key).and_then(Value::as_str).unwrap_or("")
    }
    /// The state module (`file`, `pkg`).
    pub fn state(&self) -> &str {
        self.str_field("state")
    }
    /// The state function (`managed`).
    pub fn fun(&self) -> &str {
        self.str_field("fun")
    }
    /// The id declaration.
    pub fn id(&self) -> &str {
        self.str_field("__id__")
    }
    /// The name (the id unless `name:` or `names:` say otherwise).
    pub fn name(&self) -> &str {
        self.str_field("name")
    }
    /// The SLS the id came from.
    pub fn sls(&self) -> &str {
        self.str_field("__sls__")
    }
    /// The saltenv the id came from.
    pub fn env(&self) -> &str {
        self.str_field("__env__")
    }
    /// One argument or key of the chunk.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    /// The whole chunk as Salt shows it.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
    /// The arguments a state function gets: every key except the
    /// compiler's own (`state`, `fun`, `__id__`, `__sls__`, `__env__`,
    /// `order`) and the requisites; `name` is included.
    pub fn args(&self) -> Map<String, Value> {
        self.0
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "state" | "fun" | "order" | "failhard")
                    && !k.starts_with("__")
                    && !is_requisite_key(k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn order_num(&self) -> f64 {
        self.0.get("order").and_then(Value::as_f64).unwrap_or(0.0)
    }
}

/// A compiled run: the chunks in Salt's order, and for each the chunks
/// its requisites point at.
#[derive(Debug, Clone)]
pub struct Lowstate {
    chunks: Vec<LowChunk>,
    /// `deps[i]`: (requisite kind, target chunk index) of chunk `i`,
    /// `_in` forms already turned around.
    pub(crate) deps: Vec<Vec<(String, usize)>>,
}

impl Lowstate {
    /// The chunks in order.
    pub fn chunks(&self) -> &[LowChunk] {
        &self.chunks
    }
    /// Only the chunks of id `id`, without their requisites
    /// (`state.sls_id`); `None` when no chunk has that id.
    pub fn only_id(&self, id: &str) -> Option<Lowstate> {
        let chunks: Vec<LowChunk> = self
            .chunks
            .iter()
            .filter(|c| c.id() == id)
            .cloned()
            .collect();
        if chunks.is_empty() {
            return None;
        }
        let deps = vec![Vec::new(); chunks.len()];
        Some(Lowstate { chunks, deps })
    }

    /// `state.show_lowstate`'s list.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.chunks
                .iter()
                .map(|c| Value::Object(c.0.clone()))
                .collect(),
        )
    }
}

/// High data as `state.show_sls` shows it: each id's `module.fun: [...]`
/// short forms written out as `module: [fun, {arg: value}...]`.
pub fn show_high(high: &Map<String, Value>) -> Map<String, Value> {
    let mut out = high.clone();
    for (id, body) in out.iter_mut() {
        if id != "extend" {
            normalize_short_form(body);
        }
    }
    out
}

fn is_requisite_key(k: &str) -> bool {
    let base = k.strip_suffix("_in").unwrap_or(k);
    REQUISITES.contains(&base)
}

/// Compile high data into low chunks. `order` is the order the SLS
/// files wrote their ids in, each with its state keys in file order
/// (what `brine_common::render::RenderedSls::key_order` gives; JSON maps
/// sort keys): Salt's `state_auto_order` numbers states in that order.
/// Ids and keys missing from it follow in sorted order. A top-level
/// `extend` key is merged into the ids it names; `include` must already
/// be resolved by the caller.
pub fn compile(
    high: &Map<String, Value>,
    order: &[(String, Vec<String>)],
) -> Result<Lowstate, Vec<String>> {
    let mut errors = Vec::new();
    let mut high = high.clone();
    high.remove("include");
    for (id, body) in high.iter_mut() {
        if id != "extend" {
            normalize_short_form(body);
        }
    }
    if let Some(ext) = high.remove("extend") {
        apply_extend(&mut high, &ext, &mut errors);
    }
    let mut ids: Vec<String> = Vec::new();
    for (id, _) in order {
        if high.contains_key(id) && !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    for id in high.keys() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let mut chunks = Vec::new();
    let mut auto = AUTO_ORDER_BASE;
    for id in &ids {
        let Some(body) = high.get(id) else { continue };
        let keys = order
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, k)| k.as_slice())
            .unwrap_or(&[]);
        compile_id(id, body, keys, &mut auto, &mut chunks, &mut errors);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    order_chunks(&mut chunks);
    turn_around_in(&mut chunks, &mut errors);
    apply_use(&mut chunks, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let deps = resolve(&chunks, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let low = Lowstate { chunks, deps };
    if let Some(cycle) = find_cycle(&low) {
        return Err(vec![format!("Recursive requisite found: {cycle}")]);
    }
    Ok(low)
}

fn sls_of(body: &Value) -> String {
    body.get("__sls__")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn apply_extend(high: &mut Map<String, Value>, ext: &Value, errors: &mut Vec<String>) {
    let Some(ext) = ext.as_object() else {
        errors.push("The extend statement is not formed as a dictionary".into());
        return;
    };
    for (id, body) in ext {
        let Some(body) = body.as_object() else {
            errors.push(format!(
                "ID {id} in the extend statement is not a dictionary"
            ));
            continue;
        };
        let Some(Value::Object(target)) = high.get_mut(id) else {
            let env = body
                .get("__env__")
                .and_then(Value::as_str)
                .unwrap_or("base");
            let sls = body.get("__sls__").and_then(Value::as_str).unwrap_or("");
            errors.push(format!(
                "Cannot extend ID '{id}' in '{env}:{sls}'. It is not part of the high state.\n\
                 This is likely due to a missing include statement or an incorrectly typed ID."
            ));
            continue;
        };
        for (state, run) in body {
            if state.starts_with("__") {
                continue;
            }
            let (state, short_fun) = split_state(state);
            let Some(items) = run.as_array() else {
                errors.push(format!(
                    "State '{id}' in the extend statement is not formed as a list"
                ));
                continue;
            };
            let entry = target
                .entry(state.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(existing) = entry.as_array_mut() else {
                continue;
            };
            if let Some(f) = short_fun {
                existing.retain(|v| !v.is_string());
                existing.push(Value::String(f.to_string()));
            }
            for item in items {
                match item {
                    Value::String(_) => {
                        existing.retain(|v| !v.is_string());
                        existing.push(item.clone());
                    }
                    Value::Object(arg) => {
                        for (k, v) in arg {
                            merge_arg(existing, k, v);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Merge one argument into a state's list: requisites append, anything
/// else replaces the earlier value.
fn merge_arg(list: &mut Vec<Value>, key: &str, val: &Value) {
    for item in list.iter_mut() {
        if let Some(Value::Array(old)) = item.as_object_mut().and_then(|m| m.get_mut(key)) {
            if is_requisite_key(key) {
                if let Value::Array(new) = val {
                    old.extend(new.iter().cloned());
                    return;
                }
            }
        }
        if let Some(m) = item.as_object_mut() {
            if m.contains_key(key) {
                m.insert(key.to_string(), val.clone());
                return;
            }
        }
    }
    let mut m = Map::new();
    m.insert(key.to_string(), val.clone());
    list.push(Value::Object(m));
}

/// Salt's rendering step: `pkg.installed: [args]` becomes
/// `pkg: [installed, args]` (a `null` value is an empty list), so
/// `extend` and the compiler see one form.
fn normalize_short_form(body: &mut Value) {
    let Some(map) = body.as_object_mut() else {
        return;
    };
    let dotted: Vec<String> = map
        .keys()
        .filter(|k| !k.starts_with("__") && k.contains('.'))
        .cloned()
        .collect();
    for key in dotted {
        let Some((state, fun)) = key.split_once('.') else {
            continue;
        };
        let Some(val) = map.remove(&key) else {
            continue;
        };
        let mut list = vec![Value::String(fun.to_string())];
        match val {
            Value::Array(a) => list.extend(a),
            Value::Null => {}
            other => {
                // Not a list: keep it under its own key for the
                // "not formed as a list" error.
                map.insert(key.clone(), other);
                continue;
            }
        }
        match map.get_mut(state) {
            Some(Value::Array(existing)) => existing.extend(list),
            _ => {
                map.insert(state.to_string(), Value::Array(list));
            }
        }
    }
}

fn split_state(key: &str) -> (&str, Option<&str>) {
    match key.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (key, None),
    }
}

fn compile_id(
    id: &str,
    body: &Value,
    key_order: &[String],
    auto: &mut u64,
    out: &mut Vec<LowChunk>,
    errors: &mut Vec<String>,
) {
    let Some(body_map) = body.as_object() else {
        errors.push(format!(
            "ID {id} in SLS {} is not a dictionary",
            sls_of(body)
        ));
        return;
    };
    let sls = sls_of(body);
    // State keys in file order (`pkg.installed` there is `pkg` here).
    let mut keys: Vec<&String> = Vec::new();
    for k in key_order {
        let state = split_state(k).0;
        if let Some((key, _)) = body_map.get_key_value(state) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    for key in body_map.keys() {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        let Some(run) = body_map.get(key) else {
            continue;
        };
        if key.starts_with("__") {
            continue;
        }
        let (state, short_fun) = split_state(key);
        let items: &[Value] = match run {
            Value::Array(a) => a,
            Value::Null if short_fun.is_some() => &[],
            _ => {
                errors.push(format!(
                    "State '{id}' in SLS '{sls}' is not formed as a list"
                ));
                continue;
            }
        };
        let mut funs: Vec<String> = short_fun.map(str::to_string).into_iter().collect();
        let mut chunk = Map::new();
        chunk.insert("state".into(), Value::String(state.to_string()));
        chunk.insert("name".into(), Value::String(id.to_string()));
        chunk.insert("__sls__".into(), Value::String(sls.clone()));
        chunk.insert(
            "__env__".into(),
            body_map
                .get("__env__")
                .cloned()
                .unwrap_or_else(|| Value::String("base".into())),
        );
        chunk.insert("__id__".into(), Value::String(id.to_string()));
        let mut names: Vec<Value> = Vec::new();
        for item in items {
            match item {
                Value::String(f) => funs.push(f.clone()),
                Value::Object(arg) => {
                    if arg.len() != 1 {
                        errors.push(format!(
                            "Requisite declaration {} in SLS {sls} is not formed as a single key dictionary",
                            Value::Object(arg.clone())
                        ));
                        continue;
                    }
                    for (k, v) in arg {
                        if k == "names" {
                            match v {
                                Value::Array(n) => names.extend(n.iter().cloned()),
                                _ => errors.push(format!(
                                    "The 'names' argument in state '{id}' in SLS '{sls}' needs to be formed as a list"
                                )),
                            }
                        } else if is_requisite_key(k) && !v.is_array() {
                            if v.is_object() || v.is_string() {
                                // Salt accepts a single target and lists it.
                                chunk.insert(k.clone(), Value::Array(vec![v.clone()]));
                            } else {
                                errors.push(format!(
                                    "The {k} statement in state '{id}' in SLS '{sls}' needs to be formed as a list"
                                ));
                            }
                        } else if k == "name" && !v.is_string() {
                            chunk.insert(k.clone(), Value::String(scalar_text(v)));
                        } else {
                            chunk.insert(k.clone(), v.clone());
                        }
                    }
                }
                other => errors.push(format!(
                    "State '{id}' in SLS '{sls}' has an argument that is neither a function nor a dictionary: {other}"
                )),
            }
        }
        if funs.is_empty() {
            errors.push(format!(
                "No function declared in state '{state}' in SLS '{sls}'"
            ));
            continue;
        }
        if funs.len() > 1 {
            errors.push(format!(
                "Too many functions declared in state '{state}' in SLS '{sls}'"
            ));
            continue;
        }
        match chunk.get("order") {
            None => {
                chunk.insert("order".into(), Value::from(*auto));
                *auto += 1;
            }
            Some(Value::Number(_)) | Some(Value::String(_)) => {}
            Some(_) => {
                chunk.insert("order".into(), Value::String(String::new()));
            }
        }
        chunk.insert("fun".into(), Value::String(funs[0].clone()));
        if names.is_empty() {
            out.push(LowChunk(chunk));
            continue;
        }
        for (n, entry) in names.iter().enumerate() {
            let mut live = chunk.clone();
            match entry {
                Value::Object(m) => {
                    if let Some((low_name, extra)) = m.iter().next() {
                        live.insert("name".into(), Value::String(low_name.clone()));
                        for e in extra.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                            if let Some(em) = e.as_object() {
                                live.extend(em.iter().map(|(k, v)| (k.clone(), v.clone())));
                            }
                        }
                    }
                }
                other => {
                    live.insert("name".into(), Value::String(scalar_text(other)));
                }
            }
            live.insert("name_order".into(), Value::from(n as u64 + 1));
            out.push(LowChunk(live));
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Salt's `order_chunks`: numbers first, unordered chunks at a cap past
/// the largest number, `last` after everything, `first` at 0; names
/// inside one id keep their order; ties sort by state, name, function.
fn order_chunks(chunks: &mut [LowChunk]) {
    let mut cap: f64 = 1.0;
    for c in chunks.iter() {
        if let Some(n) = c.0.get("order").and_then(Value::as_f64) {
            if n > cap - 1.0 && n > 0.0 {
                cap = n + 100.0;
            }
        }
    }
    for c in chunks.iter_mut() {
        let mut order = match c.0.get("order") {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(cap),
            Some(Value::String(s)) if s == "last" => cap + 1_000_000.0,
            Some(Value::String(s)) if s == "first" => 0.0,
            _ => cap,
        };
        if order < 0.0 {
            order += cap + 1_000_000.0;
        }
        if let Some(n) = c.0.remove("name_order").and_then(|v| v.as_f64()) {
            order += n / 10000.0;
        }
        c.0.insert("order".into(), number(order));
    }
    chunks.sort_by(|a, b| {
        a.order_num().total_cmp(&b.order_num()).then_with(|| {
            format!("{}{}{}", a.state(), a.name(), a.fun()).cmp(&format!(
                "{}{}{}",
                b.state(),
                b.name(),
                b.fun()
            ))
        })
    });
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && (0.0..1e15).contains(&f) {
        Value::from(f as u64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// One requisite target as written: `{module: id_or_name}`, `{sls: x}`
/// or a bare id/name.
fn targets_of(val: &Value) -> Vec<(Option<String>, String)> {
    let items: Vec<&Value> = match val {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) => out.push((None, s.clone())),
            Value::Object(m) => {
                for (k, v) in m {
                    out.push((Some(k.clone()), scalar_text(v)));
                }
            }
            other => out.push((None, scalar_text(other))),
        }
    }
    out
}

fn matches(c: &LowChunk, module: &Option<String>, target: &str) -> bool {
    match module.as_deref() {
        Some("sls") => c.sls() == target,
        Some(m) => c.state() == m && (c.id() == target || c.name() == target),
        None => c.id() == target || c.name() == target,
    }
}

fn find(chunks: &[LowChunk], module: &Option<String>, target: &str) -> Vec<usize> {
    (0..chunks.len())
        .filter(|&i| matches(&chunks[i], module, target))
        .collect()
}

/// `require_in: [{pkg: x}]` on A adds `require: [{A.state: A.id}]` to x.
fn turn_around_in(chunks: &mut [LowChunk], errors: &mut Vec<String>) {
    let mut adds: Vec<(usize, String, Value)> = Vec::new();
    for c in chunks.iter() {
        for kind in REQUISITES {
            let key = format!("{kind}_in");
            let Some(val) = c.0.get(&key) else { continue };
            for (module, target) in targets_of(val) {
                let found = find(chunks, &module, &target);
                if found.is_empty() {
                    errors.push(not_found(&key, &module, &target));
                }
                let mut m = Map::new();
                m.insert(c.state().to_string(), Value::String(c.id().to_string()));
                for t in found {
                    adds.push((t, kind.to_string(), Value::Object(m.clone())));
                }
            }
        }
    }
    for (t, kind, v) in adds {
        let entry = chunks[t]
            .0
            .entry(kind)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            if !a.contains(&v) {
                a.push(v);
            }
        }
    }
}

fn not_found(kind: &str, module: &Option<String>, target: &str) -> String {
    let m = module.as_deref().unwrap_or("id");
    format!("The following requisites were not found:\n                   {kind}:\n                       {m}: {target}\n")
}

/// `use: [{pkg: x}]` copies x's arguments this chunk does not set.
fn apply_use(chunks: &mut [LowChunk], errors: &mut Vec<String>) {
    for i in 0..chunks.len() {
        let Some(val) = chunks[i].0.get("use").cloned() else {
            continue;
        };
        for (module, target) in targets_of(&val) {
            let found = find(chunks, &module, &target);
            if found.is_empty() {
                errors.push(not_found("use", &module, &target));
            }
            for t in found {
                let copy: Vec<(String, Value)> = chunks[t]
                    .args()
                    .into_iter()
                    .filter(|(k, _)| k != "name" && k != "names")
                    .collect();
                for (k, v) in copy {
                    chunks[i].0.entry(k).or_insert(v);
                }
            }
        }
    }
}

fn resolve(chunks: &[LowChunk], errors: &mut Vec<String>) -> Vec<Vec<(String, usize)>> {
    let mut deps = vec![Vec::new(); chunks.len()];
    for (i, c) in chunks.iter().enumerate() {
        for kind in REQUISITES.iter().filter(|k| **k != "use") {
            let Some(val) = c.0.get(*kind) else { continue };
            for (module, target) in targets_of(val) {
                let found = find(chunks, &module, &target);
                if found.is_empty() {
                    errors.push(not_found(kind, &module, &target));
                }
                for t in found {
                    if t != i && !deps[i].contains(&(kind.to_string(), t)) {
                        deps[i].push((kind.to_string(), t));
                    }
                }
            }
        }
    }
    deps
}

/// The chunks that must finish before chunk `i` starts: its requisite
/// targets, and the chunks that name `i` as their `prereq` (a prereq
/// runs before the state it watches).
pub(crate) fn before(low: &Lowstate, i: usize) -> Vec<usize> {
    let mut out: Vec<usize> = low.deps[i]
        .iter()
        .filter(|(k, _)| k != "prereq")
        .map(|(_, t)| *t)
        .collect();
    for (j, d) in low.deps.iter().enumerate() {
        if d.iter().any(|(k, t)| k == "prereq" && *t == i) {
            out.push(j);
        }
    }
    out
}

/// A requisite cycle as `sls.id -> ... -> sls.id`, if there is one.
fn find_cycle(low: &Lowstate) -> Option<String> {
    let n = low.chunks.len();
    // 0 unvisited, 1 on the stack, 2 done.
    let mut mark = vec![0u8; n];
    for start in 0..n {
        if mark[start] != 0 {
            continue;
        }
        // Explicit stack of (node, next edge); bounded by n nodes each
        // pushed once.
        let mut stack: Vec<(usize, Vec<usize>, usize)> = vec![(start, before(low, start), 0)];
        mark[start] = 1;
        while let Some((node, edges, pos)) = stack.last_mut() {
            if *pos >= edges.len() {
                mark[*node] = 2;
                stack.pop();
                continue;
            }
            let next = edges[*pos];
            *pos += 1;
            match mark[next] {
                0 => {
                    mark[next] = 1;
                    let e = before(low, next);
                    stack.push((next, e, 0));
                }
                1 => {
                    let from = stack.iter().position(|(n, _, _)| *n == next).unwrap_or(0);
                    let mut path: Vec<String> = stack[from..]
                        .iter()
                        .map(|(n, _, _)| {
                            format!("{}.{}", low.chunks[*n].sls(), low.chunks[*n].id())
                        })
                        .collect();
                    path.push(format!(
                        "{}.{}",
                        low.chunks[next].sls(),
                        low.chunks[next].id()
                    ));
                    return Some(path.join(" -> "));
                }
                _ => {}
            }
        }
    }
    None
}
