//! What one normalised statement text says about indexes: the columns it filters, joins and
//! sorts on, per table, and the two rulebook lints (`SELECT *`, an unbounded select).
//!
//! Pure: the text is parsed with `sqlparser` (PostgreSQL dialect; `$1` placeholders parse as
//! placeholders) and the syntax tree is walked. Nothing here knows the database: a name is
//! kept as written (identifiers folded as PostgreSQL folds them), and a column written without
//! a table in a query over several tables keeps every table of its `FROM` as a candidate. The
//! collector resolves both against the catalog (`to_regclass`, `pg_attribute`). A text that
//! does not parse (a truncated one, a dialect feature the parser lacks) is an error the
//! collector counts; nothing in here panics on any input (a proptest feeds it hostile texts).

use sqlparser::ast::{
    BinaryOperator, Expr, FromTable, GroupByExpr, Ident, InTarget, JoinConstraint, JoinOperator,
    ObjectName, OrderByKind, Query, Select, SelectItem, SetExpr, Statement, TableFactor,
    TableWithJoins, UpdateTableFromKind, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// A table as a statement names it: identifiers folded (unquoted to lower case, quoted kept).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    /// The schema, if the statement names one.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// The name as `to_regclass` reads it: each part double-quoted where PostgreSQL needs it.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// `ident` double-quoted unless it is a plain lower-case identifier.
pub fn quote_ident(ident: &str) -> String {
    let plain = ident
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && ident
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        ident.to_owned()
    } else {
        format!("\"{}\"", ident.replace('"', "\"\""))
    }
}

/// How a statement uses a column, in the order an index should list them (equality first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Usage {
    /// `col = $1`.
    Equality,
    /// `col IN (...)`, `col = ANY($1)`.
    In,
    /// `col < $1`, `BETWEEN`.
    Range,
    /// `col LIKE 'abc%'`. `LIKE $1` is not counted: pg_stat_statements replaced the pattern,
    /// which may as well be `'%abc%'`, and no suggestion beats a wrong one.
    LikePrefix,
    /// `a.col = b.col` in a `JOIN ... ON` or a `WHERE`, `USING (col)`.
    Join,
    /// `ORDER BY col`.
    OrderBy,
}

impl Usage {
    /// Whether the usage is a filter (`WHERE`): what an index serves best.
    pub fn is_filter(self) -> bool {
        matches!(
            self,
            Usage::Equality | Usage::In | Usage::Range | Usage::LikePrefix
        )
    }

    /// The verb of the advice's sentence.
    pub fn verb(self) -> &'static str {
        match self {
            Usage::Join => "joins",
            Usage::OrderBy => "sorts",
            _ => "filters",
        }
    }
}

/// One column a statement uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnUse {
    /// The table it belongs to; several when the statement did not say which (the catalog
    /// decides).
    pub tables: Vec<TableName>,
    /// The column, folded.
    pub column: String,
    /// How it is used.
    pub usage: Usage,
}

/// What one statement says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// The columns it uses, in the order met.
    pub columns: Vec<ColumnUse>,
    /// Every base table it reads (common table expressions and subqueries in `FROM` are not
    /// tables), in the order met, once each.
    pub tables: Vec<TableName>,
    /// A `SELECT *` or `SELECT t.*` anywhere in it (rule 6).
    pub select_star: bool,
    /// A top-level `SELECT` with no `LIMIT`/`FETCH` that is not aggregate-only (`count(*)`,
    /// `sum(...)` without `GROUP BY`); whether the table is large is the collector's to say.
    pub unbounded: bool,
}

/// Why a text was not analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not parsed: {0}")]
pub struct ParseFailure(pub String);

/// Parse `sql` (one or more statements) and collect what it says.
pub fn analyse(sql: &str) -> Result<Analysis, ParseFailure> {
    let statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| ParseFailure(e.to_string()))?;
    let mut walker = Walker::default();
    for statement in &statements {
        walker.statement(statement);
    }
    Ok(walker.out)
}

/// The names visible in one `SELECT`: alias (or table name) → the table, `None` for a
/// subquery or a common table expression.
type Scope = Vec<(String, Option<TableName>)>;

#[derive(Default)]
struct Walker {
    out: Analysis,
    /// The common table expressions in force, innermost last.
    ctes: Vec<Vec<String>>,
}

fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn idents(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| part.as_ident().map(fold).unwrap_or_default())
        .collect()
}

impl Walker {
    fn statement(&mut self, statement: &Statement) {
        match statement {
            Statement::Query(query) => {
                self.out.unbounded |= is_unbounded(query);
                self.query(query, &[]);
            }
            Statement::Update(update) => {
                let mut scope = Scope::new();
                self.bind_item(&update.table, &mut scope, &[]);
                if let Some(
                    UpdateTableFromKind::BeforeSet(from) | UpdateTableFromKind::AfterSet(from),
                ) = &update.from
                {
                    for item in from {
                        self.bind_item(item, &mut scope, &[]);
                    }
                }
                let scopes = [scope];
                if let Some(selection) = &update.selection {
                    self.condition(selection, &scopes);
                }
            }
            Statement::Delete(delete) => {
                let mut scope = Scope::new();
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) =
                    &delete.from;
                for item in from.iter().chain(delete.using.iter().flatten()) {
                    self.bind_item(item, &mut scope, &[]);
                }
                let scopes = [scope];
                if let Some(selection) = &delete.selection {
                    self.condition(selection, &scopes);
                }
            }
            _ => {}
        }
    }

    fn query(&mut self, query: &Query, outer: &[Scope]) {
        let mut names = Vec::new();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                names.push(fold(&cte.alias.name));
                // A recursive CTE sees itself; a plain one sees the ones before it.
                self.ctes.push(names.clone());
                self.query(&cte.query, outer);
                self.ctes.pop();
            }
        }
        self.ctes.push(names);
        let order_by = query.order_by.as_ref().and_then(|o| match &o.kind {
            OrderByKind::Expressions(exprs) => Some(exprs.iter().map(|e| &e.expr).collect()),
            OrderByKind::All(_) => None,
        });
        self.set_expr(&query.body, outer, order_by.unwrap_or_default());
        self.ctes.pop();
    }

    fn set_expr(&mut self, body: &SetExpr, outer: &[Scope], order_by: Vec<&Expr>) {
        match body {
            SetExpr::Select(select) => self.select(select, outer, &order_by),
            SetExpr::Query(query) => self.query(query, outer),
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left, outer, Vec::new());
                self.set_expr(right, outer, Vec::new());
            }
            SetExpr::Update(statement) | SetExpr::Delete(statement) => self.statement(statement),
            _ => {}
        }
    }

    fn select(&mut self, select: &Select, outer: &[Scope], order_by: &[&Expr]) {
        let mut scope = Scope::new();
        for item in &select.from {
            self.bind_item(item, &mut scope, outer);
        }
        let mut scopes = outer.to_vec();
        scopes.push(scope);
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    self.out.select_star = true;
                }
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                    self.subqueries(expr, &scopes);
                }
                _ => {}
            }
        }
        for item in &select.from {
            for join in &item.joins {
                self.join(join, &scopes);
            }
        }
        if let Some(selection) = &select.selection {
            self.condition(selection, &scopes);
        }
        for expr in order_by {
            if let Some(column) = column_ref(expr) {
                self.record(column, Usage::OrderBy, &scopes);
            }
        }
    }

    /// Bind the tables of one `FROM` item (and its joins) in `scope`.
    fn bind_item(&mut self, item: &TableWithJoins, scope: &mut Scope, outer: &[Scope]) {
        self.factor(&item.relation, scope, outer);
        for join in &item.joins {
            self.factor(&join.relation, scope, outer);
        }
    }

    fn factor(&mut self, factor: &TableFactor, scope: &mut Scope, outer: &[Scope]) {
        match factor {
            TableFactor::Table { name, alias, .. } => {
                let parts = idents(name);
                let Some(table) = parts.last().cloned() else {
                    return;
                };
                let binding = alias.as_ref().map_or(table.clone(), |a| fold(&a.name));
                let is_cte = parts.len() == 1 && self.ctes.iter().any(|n| n.contains(&table));
                let resolved = (!is_cte).then(|| TableName {
                    schema: (parts.len() >= 2).then(|| parts[parts.len() - 2].clone()),
                    name: table,
                });
                if let Some(t) = &resolved {
                    if !self.out.tables.contains(t) {
                        self.out.tables.push(t.clone());
                    }
                }
                scope.push((binding, resolved));
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.query(subquery, outer);
                if let Some(alias) = alias {
                    scope.push((fold(&alias.name), None));
                }
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => self.bind_item(table_with_joins, scope, outer),
            _ => {}
        }
    }

    fn join(&mut self, join: &sqlparser::ast::Join, scopes: &[Scope]) {
        let constraint = match &join.join_operator {
            JoinOperator::Join(c)
            | JoinOperator::Inner(c)
            | JoinOperator::Left(c)
            | JoinOperator::LeftOuter(c)
            | JoinOperator::Right(c)
            | JoinOperator::RightOuter(c)
            | JoinOperator::FullOuter(c) => c,
            _ => return,
        };
        match constraint {
            JoinConstraint::On(expr) => self.condition(expr, scopes),
            JoinConstraint::Using(names) => {
                for name in names {
                    if let Some(column) = idents(name).last() {
                        self.record((None, column.clone()), Usage::Join, scopes);
                    }
                }
            }
            _ => {}
        }
    }

    /// A `WHERE` or `ON` condition.
    fn condition(&mut self, expr: &Expr, scopes: &[Scope]) {
        match expr {
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    self.condition(left, scopes);
                    self.condition(right, scopes);
                }
                BinaryOperator::Eq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq => {
                    let (l, r) = (column_ref(left), column_ref(right));
                    let usage = match (&l, &r, op) {
                        (Some(_), Some(_), _) => Usage::Join,
                        (_, _, BinaryOperator::Eq) => Usage::Equality,
                        _ => Usage::Range,
                    };
                    for (side, column) in [(left, l), (right, r)] {
                        match column {
                            Some(column) => self.record(column, usage, scopes),
                            None => self.subqueries(side, scopes),
                        }
                    }
                }
                _ => {
                    self.subqueries(left, scopes);
                    self.subqueries(right, scopes);
                }
            },
            Expr::Nested(inner) => self.condition(inner, scopes),
            Expr::In {
                expr,
                target,
                negated: false,
                ..
            } => {
                if let Some(column) = column_ref(expr) {
                    self.record(column, Usage::In, scopes);
                }
                if let InTarget::Subquery(query) = target {
                    self.query(query, scopes);
                }
            }
            Expr::In {
                target: InTarget::Subquery(query),
                ..
            } => self.query(query, scopes),
            Expr::Between {
                expr,
                negated: false,
                ..
            } => {
                if let Some(column) = column_ref(expr) {
                    self.record(column, Usage::Range, scopes);
                }
            }
            Expr::Like {
                negated: false,
                any: false,
                expr,
                pattern,
                ..
            } if like_prefix(pattern) => {
                if let Some(column) = column_ref(expr) {
                    self.record(column, Usage::LikePrefix, scopes);
                }
            }
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } => {
                if let Some(column) = column_ref(left) {
                    self.record(column, Usage::In, scopes);
                }
                self.subqueries(right, scopes);
            }
            other => self.subqueries(other, scopes),
        }
    }

    /// The subqueries directly inside an expression that is not itself a usable condition.
    fn subqueries(&mut self, expr: &Expr, scopes: &[Scope]) {
        match expr {
            Expr::Exists { subquery, .. } | Expr::Subquery(subquery) => {
                self.query(subquery, scopes)
            }
            Expr::In {
                target: InTarget::Subquery(query),
                ..
            } => self.query(query, scopes),
            Expr::Nested(inner) | Expr::UnaryOp { expr: inner, .. } => {
                self.subqueries(inner, scopes)
            }
            _ => {}
        }
    }

    fn record(&mut self, (qualifier, column): ColumnRef, usage: Usage, scopes: &[Scope]) {
        let tables: Vec<TableName> = match qualifier {
            Some(q) => scopes
                .iter()
                .rev()
                .find_map(|scope| scope.iter().find(|(b, _)| *b == q))
                .and_then(|(_, t)| t.clone())
                .into_iter()
                .collect(),
            None => scopes
                .last()
                .map(|scope| scope.iter().filter_map(|(_, t)| t.clone()).collect())
                .unwrap_or_default(),
        };
        if tables.is_empty() {
            return;
        }
        let found = ColumnUse {
            tables,
            column,
            usage,
        };
        if !self.out.columns.contains(&found) {
            self.out.columns.push(found);
        }
    }
}

/// A column reference: the qualifier (alias or table) if written, and the column.
type ColumnRef = (Option<String>, String);

fn column_ref(expr: &Expr) -> Option<ColumnRef> {
    match expr {
        Expr::Identifier(ident) => Some((None, fold(ident))),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => Some((
            Some(fold(&parts[parts.len() - 2])),
            fold(&parts[parts.len() - 1]),
        )),
        Expr::Nested(inner) => column_ref(inner),
        _ => None,
    }
}

/// A `LIKE` pattern a b-tree index can serve: a literal that does not start with a wildcard
/// (not a placeholder: the pattern it stands for is unknown).
fn like_prefix(pattern: &Expr) -> bool {
    match pattern {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => !s.starts_with('%') && !s.starts_with('_'),
            _ => false,
        },
        _ => false,
    }
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "string_agg",
    "array_agg",
    "json_agg",
    "jsonb_agg",
];

/// A top-level select that returns every row it reads: no `LIMIT`/`FETCH`, and not
/// aggregate-only.
fn is_unbounded(query: &Query) -> bool {
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return false;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    if select.from.is_empty() {
        return false;
    }
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    let aggregate_only = !grouped
        && select.projection.iter().all(|item| match item {
            SelectItem::UnnamedExpr(Expr::Function(f))
            | SelectItem::ExprWithAlias {
                expr: Expr::Function(f),
                ..
            } => idents(&f.name)
                .last()
                .is_some_and(|n| AGGREGATES.contains(&n.as_str())),
            _ => false,
        });
    !aggregate_only
}

#[cfg(test)]
mod tests;
